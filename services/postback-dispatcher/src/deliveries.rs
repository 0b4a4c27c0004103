//! The deliveries an instance knows, in memory: which are due, which are in flight, which
//! partitions it owns, and which deliveries a manual replay selects.
//!
//! Pure bookkeeping: no Kafka, no HTTP. Writing records and sending postbacks is the
//! dispatcher's business; this module decides what is scheduled and in which order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use rdkafka::message::OwnedHeaders;
use traffsure_events::{OutboundDelivery, OutboundState};

/// The key of one delivery: a conversion version and one outbound postback of its flow.
pub fn delivery_key(conversion_id: &str, version: u32, outbound_id: &str) -> String {
    format!("{conversion_id}/{version}/{outbound_id}")
}

/// Whether a delivery in this state still waits for an attempt.
pub fn schedulable(state: OutboundState) -> bool {
    matches!(state, OutboundState::Unspecified | OutboundState::Retrying)
}

/// A delivery record and the partition it lives on (of `conversions` and of
/// `outbound-deliveries` alike).
pub struct Entry {
    pub record: OutboundDelivery,
    pub partition: i32,
}

#[derive(Default)]
pub struct Deliveries {
    pub by_key: HashMap<String, Entry>,
    /// (due time, key); stale entries (the record moved on) are skipped when popped.
    due: BinaryHeap<Reverse<(i64, String)>>,
    pub in_flight: HashSet<String>,
    /// Partitions of `conversions` this instance owns; only their deliveries are sent,
    /// so several instances never send the same delivery. Empty until the first assignment.
    pub assigned: HashSet<i32>,
    /// Conversions per partition whose delivery records are being written.
    pub recording: HashMap<i32, usize>,
    /// The trace context of the conversion each unfinished delivery came from (kept in
    /// memory only, and only while traces are exported).
    pub traces: HashMap<String, OwnedHeaders>,
}

/// Which deliveries a manual replay selects.
#[derive(Debug, Clone)]
pub enum ReplaySelection {
    /// The latest version of one conversion, optionally one outbound postback.
    Conversion {
        conversion_id: String,
        outbound_id: Option<String>,
    },
    /// Every delivery of a flow in one state, optionally one outbound postback.
    Flow {
        flow_id: u32,
        state: OutboundState,
        outbound_id: Option<String>,
    },
}

impl ReplaySelection {
    /// Whether a record belongs to the selection's conversion or flow and outbound
    /// postback, whatever its state and version.
    fn concerns(&self, record: &OutboundDelivery) -> bool {
        let (owner, outbound_id) = match self {
            ReplaySelection::Conversion {
                conversion_id,
                outbound_id,
            } => (
                record.conversion.as_ref().map(|c| c.conversion_id.as_str())
                    == Some(conversion_id.as_str()),
                outbound_id,
            ),
            ReplaySelection::Flow {
                flow_id,
                outbound_id,
                ..
            } => (
                record.conversion.as_ref().map(|c| c.flow_id) == Some(*flow_id),
                outbound_id,
            ),
        };
        owner
            && outbound_id
                .as_ref()
                .is_none_or(|id| *id == record.outbound_id)
    }
}

impl Deliveries {
    /// Adds a newly recorded delivery, unless one with its key is already known (the same
    /// conversion version read twice).
    pub fn put_new(&mut self, record: OutboundDelivery, partition: i32) {
        if !self.by_key.contains_key(&record.key) {
            self.put(record, partition);
        }
    }

    /// Adds or replaces a delivery; a schedulable one is queued at its due time.
    pub fn put(&mut self, record: OutboundDelivery, partition: i32) {
        if schedulable(record.state()) {
            self.due
                .push(Reverse((record.due_at_ms, record.key.clone())));
        }
        self.by_key
            .insert(record.key.clone(), Entry { record, partition });
    }

    /// Takes the deliveries due at `now` that this instance may start, earliest first,
    /// and marks them in flight; also returns when the next one is due.
    pub fn take_due(&mut self, now: i64) -> (Vec<String>, Option<i64>) {
        let mut ready = Vec::new();
        loop {
            let Some(Reverse((due, _))) = self.due.peek() else {
                return (ready, None);
            };
            if *due > now {
                return (ready, Some(*due));
            }
            let Some(Reverse((due, key))) = self.due.pop() else {
                return (ready, None);
            };
            let current = self.by_key.get(&key).is_some_and(|e| {
                e.record.due_at_ms == due
                    && schedulable(e.record.state())
                    && self.assigned.contains(&e.partition)
            });
            if current && self.in_flight.insert(key.clone()) {
                ready.push(key);
            }
        }
    }

    /// Puts a delivery in flight back in the queue, due at `due`, without an attempt.
    pub fn postpone(&mut self, key: &str, due: i64) {
        self.in_flight.remove(key);
        if let Some(entry) = self.by_key.get_mut(key) {
            entry.record.due_at_ms = due;
            self.due.push(Reverse((due, key.to_string())));
        }
    }

    /// Attempts in flight and conversions being recorded on some partitions.
    pub fn busy(&self, partitions: &[i32]) -> usize {
        let attempts = self
            .in_flight
            .iter()
            .filter(|key| {
                self.by_key
                    .get(*key)
                    .is_some_and(|e| partitions.contains(&e.partition))
            })
            .count();
        let recordings: usize = partitions
            .iter()
            .filter_map(|p| self.recording.get(p))
            .sum();
        attempts + recordings
    }

    /// Replaces what is known of some partitions by their records as read back, and owns
    /// them from now on. A delivery in flight keeps its entry: its attempt records it.
    pub fn take_over(
        &mut self,
        partitions: &[i32],
        loaded: impl IntoIterator<Item = (OutboundDelivery, i32)>,
    ) {
        let in_flight = &self.in_flight;
        self.by_key
            .retain(|key, e| !partitions.contains(&e.partition) || in_flight.contains(key));
        for (record, partition) in loaded {
            self.put(record, partition);
        }
        self.assigned.extend(partitions.iter().copied());
    }

    /// The deliveries a replay schedules again: for a conversion its latest version per
    /// outbound postback, for a flow those in the state asked; none in flight.
    pub fn select(&self, selection: &ReplaySelection) -> Vec<&Entry> {
        let concerned = self
            .by_key
            .values()
            .filter(|e| selection.concerns(&e.record));
        let mut chosen: Vec<&Entry> = match selection {
            ReplaySelection::Conversion { .. } => {
                let mut latest: HashMap<&str, &Entry> = HashMap::new();
                for entry in concerned {
                    let version = |e: &Entry| e.record.conversion.as_ref().map(|c| c.version);
                    let newer = latest
                        .get(entry.record.outbound_id.as_str())
                        .is_none_or(|e| version(e) < version(entry));
                    if newer {
                        latest.insert(entry.record.outbound_id.as_str(), entry);
                    }
                }
                latest.into_values().collect()
            }
            ReplaySelection::Flow { state, .. } => {
                concerned.filter(|e| e.record.state() == *state).collect()
            }
        };
        chosen.retain(|e| !self.in_flight.contains(&e.record.key));
        chosen
    }

    /// Whether any delivery matches, in any state (to tell "nothing to replay" from
    /// "unknown").
    pub fn knows(&self, selection: &ReplaySelection) -> bool {
        self.by_key.values().any(|e| selection.concerns(&e.record))
    }
}

/// A delivery as a replay schedules it: due now, its round of attempts counted afresh.
pub fn replayed(mut record: OutboundDelivery, now: i64) -> OutboundDelivery {
    record.set_state(OutboundState::Unspecified);
    record.round_attempt = 0;
    record.due_at_ms = now;
    record.updated_at_ms = now;
    record.manual = true;
    record
}

#[cfg(test)]
mod tests {
    use traffsure_events::Conversion;

    use super::*;

    fn record(
        conversion_id: &str,
        version: u32,
        outbound_id: &str,
        state: OutboundState,
        due: i64,
    ) -> OutboundDelivery {
        let mut record = OutboundDelivery {
            key: delivery_key(conversion_id, version, outbound_id),
            conversion: Some(Conversion {
                conversion_id: conversion_id.into(),
                version,
                flow_id: 7,
                ..Conversion::default()
            }),
            outbound_id: outbound_id.into(),
            due_at_ms: due,
            ..OutboundDelivery::default()
        };
        record.set_state(state);
        record
    }

    /// The keys of some entries, sorted.
    fn keys(entries: Vec<&Entry>) -> Vec<String> {
        let mut keys: Vec<String> = entries.iter().map(|e| e.record.key.clone()).collect();
        keys.sort();
        keys
    }

    fn owning(partitions: &[i32]) -> Deliveries {
        Deliveries {
            assigned: partitions.iter().copied().collect(),
            ..Deliveries::default()
        }
    }

    #[test]
    fn only_scheduled_and_retrying_deliveries_wait_for_an_attempt() {
        assert!(schedulable(OutboundState::Unspecified));
        assert!(schedulable(OutboundState::Retrying));
        assert!(!schedulable(OutboundState::Delivered));
        assert!(!schedulable(OutboundState::Dead));
        assert!(!schedulable(OutboundState::Refused));
    }

    #[test]
    fn put_new_keeps_the_known_record_and_put_replaces_it() {
        let mut deliveries = owning(&[0]);
        deliveries.put_new(record("c", 1, "o", OutboundState::Retrying, 5), 0);
        deliveries.put_new(record("c", 1, "o", OutboundState::Unspecified, 1), 0);
        let key = delivery_key("c", 1, "o");
        assert_eq!(deliveries.by_key[&key].record.due_at_ms, 5);
        deliveries.put(record("c", 1, "o", OutboundState::Delivered, 9), 0);
        assert_eq!(
            deliveries.by_key[&key].record.state(),
            OutboundState::Delivered
        );
        // Neither queued time is current any more: nothing is started.
        assert_eq!(deliveries.take_due(100), (vec![], None));
    }

    #[test]
    fn due_deliveries_start_earliest_first_once_each_on_owned_partitions() {
        let mut deliveries = owning(&[0]);
        deliveries.put(record("b", 1, "o", OutboundState::Unspecified, 20), 0);
        deliveries.put(record("a", 1, "o", OutboundState::Retrying, 10), 0);
        deliveries.put(record("later", 1, "o", OutboundState::Unspecified, 50), 0);
        deliveries.put(
            record("elsewhere", 1, "o", OutboundState::Unspecified, 5),
            1,
        );
        deliveries.put(record("done", 1, "o", OutboundState::Dead, 1), 0);
        let (ready, next) = deliveries.take_due(30);
        assert_eq!(
            ready,
            [delivery_key("a", 1, "o"), delivery_key("b", 1, "o")]
        );
        assert_eq!(next, Some(50));
        assert!(deliveries.in_flight.contains(&delivery_key("a", 1, "o")));
        // Queued twice, started once.
        deliveries.put(record("later", 1, "o", OutboundState::Unspecified, 50), 0);
        assert_eq!(deliveries.take_due(60).0, [delivery_key("later", 1, "o")]);
        assert_eq!(deliveries.take_due(60), (vec![], None));
    }

    #[test]
    fn a_postponed_delivery_is_due_again_later() {
        let mut deliveries = owning(&[0]);
        deliveries.put(record("a", 1, "o", OutboundState::Unspecified, 10), 0);
        let key = delivery_key("a", 1, "o");
        assert_eq!(deliveries.take_due(10).0, [key.as_str()]);
        deliveries.postpone(&key, 40);
        assert!(deliveries.in_flight.is_empty());
        assert_eq!(deliveries.take_due(30), (vec![], Some(40)));
        assert_eq!(deliveries.take_due(40).0, [key]);
    }

    #[test]
    fn taking_a_partition_over_replaces_its_records_but_not_those_in_flight() {
        let mut deliveries = owning(&[0]);
        deliveries.put(record("flying", 1, "o", OutboundState::Unspecified, 1), 0);
        deliveries.put(record("stale", 1, "o", OutboundState::Unspecified, 50), 0);
        deliveries.put(record("other", 1, "o", OutboundState::Unspecified, 50), 1);
        assert_eq!(deliveries.take_due(1).0.len(), 1);
        deliveries.recording.insert(0, 2);
        assert_eq!(deliveries.busy(&[0]), 3);
        assert_eq!(deliveries.busy(&[1]), 0);
        deliveries.take_over(
            &[0],
            [(record("fresh", 1, "o", OutboundState::Retrying, 2), 0)],
        );
        assert_eq!(
            keys(deliveries.by_key.values().collect()),
            ["flying/1/o", "fresh/1/o", "other/1/o"]
        );
        assert!(deliveries.assigned.contains(&0));
    }

    #[test]
    fn a_conversion_replay_selects_its_latest_version_per_outbound_postback() {
        let mut deliveries = owning(&[0]);
        deliveries.put(record("c", 1, "src", OutboundState::Delivered, 0), 0);
        deliveries.put(record("c", 2, "src", OutboundState::Dead, 0), 0);
        deliveries.put(record("c", 1, "aff", OutboundState::Delivered, 0), 0);
        deliveries.put(record("d", 3, "src", OutboundState::Dead, 0), 0);
        let selection = |outbound_id: Option<&str>| ReplaySelection::Conversion {
            conversion_id: "c".into(),
            outbound_id: outbound_id.map(str::to_string),
        };
        assert_eq!(
            keys(deliveries.select(&selection(None))),
            ["c/1/aff", "c/2/src"]
        );
        assert_eq!(
            keys(deliveries.select(&selection(Some("src")))),
            ["c/2/src"]
        );
        assert!(deliveries.knows(&selection(Some("aff"))));
        assert!(!deliveries.knows(&selection(Some("none"))));
    }

    #[test]
    fn a_flow_replay_selects_one_state_and_skips_deliveries_in_flight() {
        let mut deliveries = owning(&[0]);
        deliveries.put(record("a", 1, "src", OutboundState::Dead, 0), 0);
        deliveries.put(record("b", 1, "src", OutboundState::Dead, 0), 0);
        deliveries.put(record("c", 1, "src", OutboundState::Delivered, 0), 0);
        deliveries.in_flight.insert(delivery_key("b", 1, "src"));
        let flow = |flow_id, state| ReplaySelection::Flow {
            flow_id,
            state,
            outbound_id: None,
        };
        assert_eq!(
            keys(deliveries.select(&flow(7, OutboundState::Dead))),
            ["a/1/src"]
        );
        assert!(deliveries
            .select(&flow(7, OutboundState::Refused))
            .is_empty());
        assert!(deliveries.knows(&flow(7, OutboundState::Refused)));
        assert!(!deliveries.knows(&flow(8, OutboundState::Dead)));
    }

    #[test]
    fn a_replayed_delivery_is_due_now_with_a_fresh_round() {
        let mut dead = record("a", 1, "src", OutboundState::Dead, 0);
        dead.round_attempt = 12;
        dead.attempt = 12;
        let again = replayed(dead, 99);
        assert_eq!(again.state(), OutboundState::Unspecified);
        assert_eq!((again.round_attempt, again.attempt), (0, 12));
        assert_eq!((again.due_at_ms, again.updated_at_ms), (99, 99));
        assert!(again.manual);
    }
}
