//! Click and impression postbacks: the deliveries a recorded click or impression owes.
//!
//! The dispatcher's consumer reads `clicks` and `impressions` beside `conversions` (all
//! three partitioned alike, and assigned alike by the range assignor, so partition `p` of
//! each is one instance's). Most flows have no click or impression postback: for their
//! events only the flow id is decoded and the flow looked up, and the offset moves on.
//! An event of a flow that has one becomes a delivery record like a conversion's, on the
//! same partition number of `outbound-deliveries`, and is delivered, retried and logged
//! by the same machinery; its macros are the click's or the impression's own. A record of
//! `clicks` may hold several clicks (a `ClickBatch`): each owes its own deliveries.

use std::ops::Deref;

use prost::Message as _;
use traffsure_core::flow::{outbound_postbacks, postback_type_word};
use traffsure_core::now_ms;
use traffsure_events::{Click, Conversion, Flow, Impression, OutboundDelivery, OutboundPostback};

use crate::deliveries::delivery_key;

/// Only the flow id of a click or impression event (field 2 of both): enough to tell
/// whether the event fires anything, without decoding the rest.
#[derive(Clone, PartialEq, prost::Message)]
struct FlowOnly {
    #[prost(uint32, tag = "2")]
    flow_id: u32,
}

/// What a click or impression postback fires for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Click,
    Impression,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Self::Click => "click",
            Self::Impression => "impression",
        }
    }
}

/// The enabled outbound postbacks of `flow` of `kind`.
fn of_kind(flow: &Flow, kind: Kind) -> impl Iterator<Item = &OutboundPostback> {
    outbound_postbacks(flow)
        .filter(move |o| o.enabled && postback_type_word(&o.r#type) == kind.word())
}

/// The flow id of a click or impression record; `None` when it is not one. Of a
/// `ClickBatch`, its first click's (see `deliveries`).
#[cfg(test)]
pub fn flow_of(payload: &[u8]) -> Option<u32> {
    let first = traffsure_events::click_payloads(payload)
        .ok()?
        .into_iter()
        .next()?;
    FlowOnly::decode(first).ok().map(|f| f.flow_id)
}

/// The deliveries the events of a record owe that belong to `flow` (`None`: unknown,
/// fires nothing): the record's click or impression, or the clicks of a `ClickBatch` of
/// that flow. A batch of several flows needs `record_deliveries`.
#[cfg(test)]
pub fn deliveries(kind: Kind, flow: Option<&Flow>, payload: &[u8]) -> Vec<OutboundDelivery> {
    record_deliveries(kind, payload, |id| flow.filter(|f| f.id == id))
}

/// The deliveries the events of a record owe: its click or impression, or every click of
/// a `ClickBatch`, each with its flow as `flow` finds it (`None`: unknown, fires nothing).
/// Keys are `<click hash or impression id>/0/<outbound id>`.
pub fn record_deliveries<F: Deref<Target = Flow>>(
    kind: Kind,
    payload: &[u8],
    flow: impl Fn(u32) -> Option<F>,
) -> Vec<OutboundDelivery> {
    let events = match kind {
        Kind::Click => traffsure_events::click_payloads(payload).unwrap_or_default(),
        Kind::Impression => vec![payload],
    };
    events
        .into_iter()
        .flat_map(|event| {
            let flow = FlowOnly::decode(event).ok().and_then(|f| flow(f.flow_id));
            event_deliveries(kind, flow.as_deref(), event)
        })
        .collect()
}

/// The deliveries one click or impression event owes, given its flow.
fn event_deliveries(kind: Kind, flow: Option<&Flow>, payload: &[u8]) -> Vec<OutboundDelivery> {
    let Some(flow) = flow else {
        return Vec::new();
    };
    let outbounds: Vec<&OutboundPostback> = of_kind(flow, kind).collect();
    if outbounds.is_empty() {
        return Vec::new();
    }
    let (id, ts_ms, conversion, click, impression) = match kind {
        Kind::Click => {
            let Ok(click) = Click::decode(payload) else {
                return Vec::new();
            };
            (
                click.click_hash.clone(),
                click.ts_ms,
                conversion_of_click(&click),
                Some(click),
                None,
            )
        }
        Kind::Impression => {
            let Ok(impression) = Impression::decode(payload) else {
                return Vec::new();
            };
            (
                impression.impression_id.clone(),
                impression.ts_ms,
                conversion_of_impression(&impression),
                None,
                Some(impression),
            )
        }
    };
    if id.is_empty() {
        return Vec::new();
    }
    outbounds
        .into_iter()
        .map(|outbound| OutboundDelivery {
            key: delivery_key(&id, 0, &outbound.id),
            conversion: Some(conversion.clone()),
            outbound_id: outbound.id.clone(),
            due_at_ms: ts_ms + i64::from(outbound.delay_seconds) * 1000,
            updated_at_ms: now_ms(),
            postback_type: kind.word().into(),
            click: click.clone(),
            impression: impression.clone(),
            ..OutboundDelivery::default()
        })
        .collect()
}

/// What the delivery machinery reads of a conversion (flow, click, dimensions, objects),
/// for a click: no conversion id, goal, status or revenue.
fn conversion_of_click(click: &Click) -> Conversion {
    Conversion {
        click_hash: click.click_hash.clone(),
        flow_id: click.flow_id,
        click_ts_ms: click.ts_ms,
        created_at_ms: click.ts_ms,
        country: click.country.clone(),
        source: click.source.clone(),
        sub_id: click.sub_id.clone(),
        subs: click.subs.clone(),
        device: click.device.clone(),
        os: click.os.clone(),
        browser: click.browser.clone(),
        routing_key: click.routing_key,
        traffic_source_id: click.traffic_source_id,
        offer_id: click.offer_id,
        external_id: click.external_id.clone(),
        impression_id: click.impression_id.clone(),
        ..Conversion::default()
    }
}

fn conversion_of_impression(impression: &Impression) -> Conversion {
    Conversion {
        flow_id: impression.flow_id,
        click_ts_ms: impression.ts_ms,
        created_at_ms: impression.ts_ms,
        country: impression.country.clone(),
        source: impression.source.clone(),
        sub_id: impression.sub_id.clone(),
        subs: impression.subs.clone(),
        device: impression.device.clone(),
        os: impression.os.clone(),
        browser: impression.browser.clone(),
        routing_key: impression.routing_key,
        traffic_source_id: impression.traffic_source_id,
        external_id: impression.external_id.clone(),
        impression_id: impression.impression_id.clone(),
        ..Conversion::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn outbound(id: &str, kind: &str) -> OutboundPostback {
        OutboundPostback {
            id: id.into(),
            url: "https://s.test/?c={click}".into(),
            enabled: true,
            r#type: kind.into(),
            ..OutboundPostback::default()
        }
    }

    #[test]
    fn only_postbacks_of_the_events_type_fire() {
        let flow = Flow {
            id: 4,
            outbound_postbacks: vec![
                outbound("conv", ""),
                outbound("clk", "click"),
                outbound("imp", "impression"),
                OutboundPostback {
                    enabled: false,
                    ..outbound("off", "click")
                },
            ],
            ..Flow::default()
        };
        let click = Click {
            click_hash: "h1".into(),
            flow_id: 4,
            ts_ms: 1_000,
            subs: vec!["a".into()],
            impression_id: "iX".into(),
            ..Click::default()
        };
        let payload = click.encode_to_vec();
        assert_eq!(flow_of(&payload), Some(4));
        let records = deliveries(Kind::Click, Some(&flow), &payload);
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.key, "h1/0/clk");
        assert_eq!(record.postback_type, "click");
        assert_eq!(record.click.as_ref().unwrap().click_hash, "h1");
        let conversion = record.conversion.as_ref().unwrap();
        assert_eq!(
            (conversion.flow_id, conversion.conversion_id.as_str()),
            (4, "")
        );
        assert_eq!(conversion.impression_id, "iX");
        assert!(deliveries(Kind::Click, None, &payload).is_empty());

        let impression = Impression {
            impression_id: "iY".into(),
            flow_id: 4,
            ts_ms: 2_000,
            ..Impression::default()
        };
        let records = deliveries(Kind::Impression, Some(&flow), &impression.encode_to_vec());
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].key, "iY/0/imp");
        assert_eq!(records[0].due_at_ms, 2_000);
        let quiet = Flow {
            id: 4,
            outbound_postbacks: vec![outbound("conv", "conversion")],
            ..Flow::default()
        };
        assert!(deliveries(Kind::Click, Some(&quiet), &payload).is_empty());
    }

    #[test]
    fn every_click_of_a_batch_owes_its_deliveries() {
        let flow = |id: u32| Flow {
            id,
            outbound_postbacks: vec![outbound("clk", "click")],
            ..Flow::default()
        };
        let flows = [flow(4), flow(5)];
        let click = |hash: &str, flow_id: u32| Click {
            click_hash: hash.into(),
            flow_id,
            ts_ms: 1_000,
            ..Click::default()
        };
        let mut batch = Vec::new();
        for c in [click("a", 4), click("b", 9), click("c", 5), click("d", 4)] {
            traffsure_events::push_batched_click(&mut batch, &c.encode_to_vec());
        }
        let keys = |records: Vec<OutboundDelivery>| -> Vec<String> {
            records.into_iter().map(|r| r.key).collect()
        };
        let find = |id: u32| flows.iter().find(|f| f.id == id);
        assert_eq!(
            keys(record_deliveries(Kind::Click, &batch, find)),
            ["a/0/clk", "c/0/clk", "d/0/clk"],
            "b's flow is unknown"
        );
        // The first click's flow, as `flow_of` names it: only that flow's clicks.
        assert_eq!(flow_of(&batch), Some(4));
        assert_eq!(
            keys(deliveries(Kind::Click, Some(&flows[0]), &batch)),
            ["a/0/clk", "d/0/clk"]
        );
        batch.pop();
        assert!(
            record_deliveries(Kind::Click, &batch, find).is_empty(),
            "cut"
        );
    }
}
