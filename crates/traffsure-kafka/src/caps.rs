//! The shared count behind caps (docs/caps.md): every instance that decides against a cap
//! (click-ingest routing, attribution marking) follows the `clicks` and/or `conversions`
//! topics, all partitions, outside any group, and counts what every instance published
//! into its `traffsure_core::caps::Counter`. What it decides itself it counts at once
//! (`record_local`), so an instance never overshoots on its own; the others' events count
//! once the topic shows them.
//!
//! Which events count: a click toward its offer's caps (a visit straight to an offer or a
//! lander click-through) and toward its flow's (visits, not click-throughs); a conversion's
//! first version, unless rejected, toward its offer's and its flow's.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prost::Message as _;
use rdkafka::message::Message;
use traffsure_config::KafkaSettings;
use traffsure_core::caps::{fingerprint, scopes_of, Counter, Metric, Scope};
use traffsure_events::{Click, ClickKind, Conversion, ConversionStatus, Flow};

use crate::reader::PartitionReader;
use crate::FlowRegistry;

/// The counter an instance shares between its follower threads and its decisions.
#[derive(Debug, Default, Clone)]
pub struct SharedCounter(Arc<Mutex<Counter>>);

impl SharedCounter {
    pub fn lock(&self) -> MutexGuard<'_, Counter> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a click counts toward.
pub fn click_scopes(flow: &Flow, click: &Click) -> Vec<(Scope, Metric)> {
    traffsure_core::caps::click_scopes(flow, click.offer_id, click.kind() == ClickKind::LanderClick)
}

/// What a conversion version counts toward: its first version, unless rejected.
pub fn conversion_scopes(flow: &Flow, conversion: &Conversion) -> Vec<(Scope, Metric)> {
    if conversion.version != 1 || conversion.status() == ConversionStatus::Rejected {
        return Vec::new();
    }
    scopes_of(flow, conversion.offer_id, Metric::Conversions)
}

/// Only the flow id of a click (field 2).
#[derive(Clone, PartialEq, prost::Message)]
struct ClickFlow {
    #[prost(uint32, tag = "2")]
    flow_id: u32,
}

/// Only the flow id of a conversion (field 4).
#[derive(Clone, PartialEq, prost::Message)]
struct ConversionFlow {
    #[prost(uint32, tag = "4")]
    flow_id: u32,
}

/// How often an idle follower looks whether a flow has a cap now.
const IDLE_CHECK: Duration = Duration::from_millis(200);

/// Whether any flow has a cap of a metric, worked out again only when the flows change.
#[derive(Debug, Default)]
struct CappedFlows {
    version: Option<u64>,
    any: bool,
}

impl CappedFlows {
    fn any(&mut self, registry: &FlowRegistry, metric: Metric) -> bool {
        let version = registry.version();
        if self.version != Some(version) {
            self.any = registry
                .all()
                .iter()
                .any(|flow| traffsure_core::caps::flow_counts(flow, metric));
            self.version = Some(version);
        }
        self.any
    }
}

/// Which topic a follower reads.
#[derive(Debug, Clone, Copy)]
pub enum Counted {
    Clicks,
    Conversions,
}

/// Follows `topic` (every partition, from the beginning) on a thread of its own, counting
/// its events into `counter`. Returns once the reader is open, or at once when no flow
/// has a cap of this metric yet.
///
/// While no flow has a cap of this metric the topic is not read at all (a tracker without
/// caps pays nothing for them): the reader is closed and what the topic showed is
/// forgotten. Once a flow has one, the topic is read again from its beginning, as at
/// start, so the counts cover the caps' whole periods.
pub async fn follow_counts(
    settings: &KafkaSettings,
    topic: &str,
    counted: Counted,
    registry: Arc<FlowRegistry>,
    counter: SharedCounter,
) -> anyhow::Result<()> {
    let (settings, topic) = (settings.clone(), topic.to_string());
    let name = topic.clone();
    let metric = match counted {
        Counted::Clicks => Metric::Clicks,
        Counted::Conversions => Metric::Conversions,
    };
    let mut capped = CappedFlows::default();
    let first = if capped.any(&registry, metric) {
        let (settings, topic) = (settings.clone(), topic.clone());
        Some(
            tokio::task::spawn_blocking(move || PartitionReader::open_all(&settings, &topic))
                .await??,
        )
    } else {
        None
    };
    std::thread::Builder::new()
        .name(format!("caps {name}"))
        .spawn(move || {
            let mut reader = first;
            let mut last_expire = 0;
            loop {
                let now = traffsure_core::now_ms();
                if now - last_expire >= 1000 {
                    counter.lock().expire(now);
                    last_expire = now;
                }
                if !capped.any(&registry, metric) {
                    if reader.take().is_some() {
                        counter.lock().forget_seen(metric);
                        tracing::info!(topic = name, "no caps to count: topic no longer read");
                    }
                    std::thread::sleep(IDLE_CHECK);
                    continue;
                }
                let open = match reader.as_ref() {
                    Some(open) => open,
                    None => match PartitionReader::open_all(&settings, &topic) {
                        Ok(opened) => {
                            tracing::info!(
                                topic = name,
                                "caps to count: reading the topic from its beginning"
                            );
                            reader.insert(opened)
                        }
                        Err(error) => {
                            tracing::warn!(topic = name, %error, "caps count reader not opened");
                            std::thread::sleep(Duration::from_millis(500));
                            continue;
                        }
                    },
                };
                let message = match open.poll(Duration::from_millis(200)) {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        tracing::warn!(topic = name, %error, "caps count read failed");
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                    None => continue,
                };
                let Some(payload) = message.payload() else {
                    continue;
                };
                match counted {
                    Counted::Clicks => count_clicks(&registry, &counter, payload),
                    Counted::Conversions => {
                        // Most conversions belong to flows without caps: their flow id
                        // alone says so.
                        let Ok(flow_id) = ConversionFlow::decode(payload).map(|f| f.flow_id) else {
                            continue;
                        };
                        if !registry.get(flow_id).is_some_and(|flow| {
                            traffsure_core::caps::flow_counts(&flow, Metric::Conversions)
                        }) {
                            continue;
                        }
                        let Ok(conversion) = Conversion::decode(payload) else {
                            continue;
                        };
                        let Some(flow) = registry.get(conversion.flow_id) else {
                            continue;
                        };
                        let scopes = conversion_scopes(&flow, &conversion);
                        if !scopes.is_empty() {
                            counter.lock().record_seen(
                                fingerprint(&conversion.conversion_id),
                                &scopes,
                                conversion.created_at_ms,
                            );
                        }
                    }
                }
            }
        })?;
    Ok(())
}

/// Counts the clicks of a record of the clicks topic: one, or each of a `ClickBatch`.
fn count_clicks(registry: &FlowRegistry, counter: &SharedCounter, payload: &[u8]) {
    for payload in traffsure_events::click_payloads(payload).unwrap_or_default() {
        // Most clicks belong to flows without caps: their flow id alone says so.
        let Ok(flow_id) = ClickFlow::decode(payload).map(|f| f.flow_id) else {
            continue;
        };
        let Some(flow) = registry
            .get(flow_id)
            .filter(|flow| traffsure_core::caps::flow_counts(flow, Metric::Clicks))
        else {
            continue;
        };
        let Ok(click) = Click::decode(payload) else {
            continue;
        };
        let scopes = click_scopes(&flow, &click);
        if !scopes.is_empty() {
            counter
                .lock()
                .record_seen(fingerprint(&click.click_hash), &scopes, click.ts_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traffsure_core::caps::Scope;
    use traffsure_events::Cap;

    #[test]
    fn every_click_of_a_batch_counts() {
        let registry = FlowRegistry::new();
        registry.upsert(Flow {
            id: 4,
            caps: vec![Cap {
                metric: "clicks".into(),
                period: "lifetime".into(),
                limit: 10,
            }],
            ..Flow::default()
        });
        let click = |hash: &str, flow_id: u32| Click {
            click_hash: hash.into(),
            flow_id,
            ts_ms: 1_000,
            ..Click::default()
        };
        let mut batch = Vec::new();
        for c in [click("a", 4), click("b", 5), click("c", 4)] {
            traffsure_events::push_batched_click(&mut batch, &c.encode_to_vec());
        }
        let counter = SharedCounter::default();
        count_clicks(&registry, &counter, &batch);
        count_clicks(&registry, &counter, &click("d", 4).encode_to_vec());
        let lifetime = (i64::MIN, i64::MAX);
        assert_eq!(
            counter
                .lock()
                .count(Scope::Flow(4), Metric::Clicks, lifetime),
            3
        );
        assert_eq!(
            counter
                .lock()
                .count(Scope::Flow(5), Metric::Clicks, lifetime),
            0
        );
    }
}
