//! Caps at the tracking edge (docs/caps.md): a visit whose offer is capped goes to the next
//! open offer of its path, and to the flow's `cap_fallback_url` when every offer of the
//! path, or the flow itself, is capped. The counts come from
//! `traffsure_kafka::caps` (the `clicks` and `conversions` topics, every instance's events);
//! this edge counts its own clicks at once, so it never overshoots on its own.

use traffsure_core::caps::{self, fingerprint};
use traffsure_core::routing::Step;
use traffsure_events::{Flow, Path, PathOffer};
use traffsure_kafka::caps::SharedCounter;

/// Where the caps let a visit go.
pub(crate) enum CapRoute<'f> {
    /// Where routing chose, or the next open offer.
    Open(Option<Step<'f>>),
    /// The flow, or every offer of the path, is capped.
    Fallback,
}

/// Whether anything on the way is capped at all (most flows: no lock taken).
fn has_caps(flow: &Flow, path: Option<&Path>) -> bool {
    !flow.caps.is_empty() || path.is_some_and(|p| p.offers.iter().any(|o| !o.caps.is_empty()))
}

/// The step a visit takes once the caps are applied.
pub(crate) fn route<'f>(
    counter: &SharedCounter,
    flow: &'f Flow,
    path: Option<&'f Path>,
    step: Option<Step<'f>>,
    now_ms: i64,
) -> CapRoute<'f> {
    if !has_caps(flow, path) {
        return CapRoute::Open(step);
    }
    let counter = counter.lock();
    if caps::flow_capped(&counter, flow, now_ms) {
        return CapRoute::Fallback;
    }
    let open = |o: &PathOffer| !caps::offer_capped(&counter, o, now_ms);
    match (step, path) {
        (Some(Step::Offer(offer)), Some(path)) => {
            match caps::next_open(&path.offers, offer, open) {
                Some(next) => CapRoute::Open(Some(Step::Offer(next))),
                None => CapRoute::Fallback,
            }
        }
        (Some(Step::Lander(_)), Some(path))
            if !path.offers.is_empty() && !path.offers.iter().any(open) =>
        {
            CapRoute::Fallback
        }
        (step, _) => CapRoute::Open(step),
    }
}

/// The offer a lander click-through goes to once the caps are applied; `None` = the
/// fallback.
pub(crate) fn offer<'f>(
    counter: &SharedCounter,
    flow: &'f Flow,
    path: &'f Path,
    picked: &'f PathOffer,
    now_ms: i64,
) -> Option<&'f PathOffer> {
    if !has_caps(flow, Some(path)) {
        return Some(picked);
    }
    let counter = counter.lock();
    if caps::flow_capped(&counter, flow, now_ms) {
        return None;
    }
    caps::next_open(&path.offers, picked, |o| {
        !caps::offer_capped(&counter, o, now_ms)
    })
}

/// Counts a click this edge recorded toward its flow's and offer's click caps.
pub(crate) fn count(
    counter: &SharedCounter,
    flow: &Flow,
    click_hash: &str,
    offer_id: u32,
    lander_click: bool,
    ts_ms: i64,
) {
    let scopes = caps::click_scopes(flow, offer_id, lander_click);
    if !scopes.is_empty() {
        counter.lock().record_local(
            fingerprint(click_hash),
            &scopes,
            ts_ms,
            traffsure_core::now_ms(),
        );
    }
}
