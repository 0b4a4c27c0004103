//! Caps on conversions (docs/caps.md): a new conversion of an offer or flow that has
//! reached a conversion cap is marked `over_cap` (its postbacks are then held, suppressed
//! or sent by the dispatcher as the offer or flow says). The counts come from
//! `traffsure_kafka::caps` (the `conversions` topic: every instance's conversions); this
//! instance counts its own at once, so it never overshoots on its own.

use traffsure_core::caps::{fingerprint, Metric, Scope};
use traffsure_core::routing::path_offer;
use traffsure_events::{Conversion, Flow};
use traffsure_kafka::caps::{conversion_scopes, SharedCounter};

/// Marks a new conversion over cap when its offer or flow has reached a conversion cap,
/// and counts it.
pub fn mark_and_count(counter: &SharedCounter, flow: &Flow, conversion: &mut Conversion) {
    if conversion.version != 1 {
        return;
    }
    let scopes = conversion_scopes(flow, conversion);
    let mut counter = counter.lock();
    let now = conversion.created_at_ms;
    let offer = path_offer(flow, conversion.offer_id);
    let reached = offer.is_some_and(|o| {
        counter
            .reached(
                Scope::Offer(o.offer_id),
                &o.caps,
                Metric::Conversions,
                &o.time_zone,
                now,
            )
            .is_some()
    }) || counter
        .reached(
            Scope::Flow(flow.id),
            &flow.caps,
            Metric::Conversions,
            &flow.time_zone,
            now,
        )
        .is_some();
    conversion.over_cap = reached;
    if !scopes.is_empty() {
        counter.record_local(
            fingerprint(&conversion.conversion_id),
            &scopes,
            now,
            traffsure_core::now_ms(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traffsure_events::{Cap, ConversionStatus, Path, PathOffer};

    #[test]
    fn conversions_past_the_cap_are_marked() {
        let flow = Flow {
            id: 3,
            path: Some(Path {
                offers: vec![PathOffer {
                    offer_id: 1,
                    caps: vec![Cap {
                        metric: "conversions".into(),
                        period: "day".into(),
                        limit: 2,
                    }],
                    ..PathOffer::default()
                }],
                ..Path::default()
            }),
            ..Flow::default()
        };
        let counter = SharedCounter::default();
        let now = traffsure_core::now_ms();
        let marks: Vec<bool> = (0..4)
            .map(|i| {
                let mut conversion = Conversion {
                    conversion_id: format!("c{i}"),
                    version: 1,
                    flow_id: 3,
                    offer_id: 1,
                    created_at_ms: now,
                    ..Conversion::default()
                };
                conversion.set_status(ConversionStatus::Approved);
                mark_and_count(&counter, &flow, &mut conversion);
                conversion.over_cap
            })
            .collect();
        assert_eq!(marks, [false, false, true, true]);
    }
}
