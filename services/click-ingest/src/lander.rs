//! Lander click-throughs: `GET /lp/click` and `GET /lp/click/{n}`, the links a lander
//! puts on its call-to-action buttons.
//!
//! A visit the tracking link sent to a lander gets the lander cookie (`ts_lp`, first-party
//! to the tracker host, `SameSite=Lax`: the lander's link is a top-level navigation, so
//! the browser sends it back). The click-through finds the visit by its `click` query
//! parameter (the lander's `{click}` macro) or else by the cookie, verifies the click
//! hash as postback-ingest does, picks an offer of the visit's path (the `n`-th for
//! `/lp/click/n`, by weight otherwise or when there is no `n`-th), and records a click of
//! its own, a "hit" with a new click hash, kind `LANDER_CLICK` and the visit as its parent,
//! on the visit's routing key so both land on one partition. The visitor is then sent to
//! the offer with the hit's hash in the network's click parameter.

use std::borrow::Cow;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use traffsure_core::routing::{self, Route};
use traffsure_core::{now_ms, visitor, ClickHashInfo};
use traffsure_events::{ClickKind, Flow, FlowStatus, Path};

use crate::click::{
    clicks_total, cookie_value, offer_url, uri_too_long, with_flow, ClickParams, Edge, MacroValues,
};
use crate::event::Funnel;

/// Name of the lander cookie.
pub const COOKIE: &str = "ts_lp";
/// How long the lander cookie lives: a click-through a day after the visit is no longer
/// one the cookie answers for (the `click` parameter still is).
pub const COOKIE_MAX_AGE_SECONDS: u32 = 86_400;

/// What the lander cookie holds: `<visit click hash>.<set>.<lander id>`, the set being
/// `d` for the flow's default path or the index of the rule whose path the visit went
/// down. Only the click hash is signed: a changed set or lander id can only pick another
/// of the same flow's own offers or mislabel the lander.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisitCookie<'a> {
    pub click_hash: &'a str,
    pub route: Route,
    pub lander_id: u32,
}

impl<'a> VisitCookie<'a> {
    pub fn value(&self) -> String {
        let set = match self.route {
            Route::Rule(index) => index.to_string(),
            Route::Default | Route::Bot => "d".into(),
        };
        format!("{}.{set}.{}", self.click_hash, self.lander_id)
    }

    /// The cookie's value read back; `None` when it is not of that form.
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.split('.');
        let click_hash = parts.next().filter(|h| !h.is_empty())?;
        let route = match parts.next()? {
            "d" => Route::Default,
            index => Route::Rule(index.parse().ok()?),
        };
        let lander_id = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Self {
            click_hash,
            route,
            lander_id,
        })
    }

    /// `Set-Cookie` for the visit: `HttpOnly`, `SameSite=Lax`, sent to `/lp` only, a day
    /// long, and `Secure` when the visitor reached the edge over HTTPS.
    pub fn header(&self, secure: bool) -> Option<HeaderValue> {
        let secure = if secure { "; Secure" } else { "" };
        HeaderValue::try_from(format!(
            "{COOKIE}={}; HttpOnly; SameSite=Lax; Path=/lp; Max-Age={COOKIE_MAX_AGE_SECONDS}{secure}",
            self.value()
        ))
        .ok()
    }
}

/// Why a click-through cannot be answered with an offer.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `/lp/click/{n}` with an `n` that is not a whole number from 1.
    BadNumber,
    /// Neither a `click` parameter nor the lander cookie.
    NoVisit,
    /// The visit's click hash does not verify.
    BadVisit(String),
    /// The visit's flow is gone.
    UnknownFlow,
    /// The visit's flow has no path with offers.
    NoOffers,
}

impl Refusal {
    fn answer(&self) -> HttpResponse {
        let (mut response, message) = match self {
            Refusal::BadNumber => (
                HttpResponse::BadRequest(),
                "the offer number in /lp/click/{n} must be a whole number from 1".to_string(),
            ),
            Refusal::NoVisit => (
                HttpResponse::BadRequest(),
                "no visit to continue: the link needs the visit's click hash in its `click` \
                 parameter, or the lander cookie the tracking link set"
                    .to_string(),
            ),
            Refusal::BadVisit(why) => (
                HttpResponse::BadRequest(),
                format!("the visit is not one this tracker made: {why}"),
            ),
            Refusal::UnknownFlow => (
                HttpResponse::NotFound(),
                "the visit's flow no longer exists".to_string(),
            ),
            Refusal::NoOffers => (
                HttpResponse::NotFound(),
                "the visit's flow sends visitors to no offer".to_string(),
            ),
        };
        response
            .content_type("text/plain; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .body(message)
    }
}

/// `GET /lp/click` and `GET /lp/click/{n}`.
pub async fn click_through(req: HttpRequest) -> HttpResponse {
    match req.app_data::<web::Data<Edge>>() {
        Some(edge) => answer(edge, &req).unwrap_or_else(|refusal| {
            tracing::debug!(?refusal, "lander click-through refused");
            refusal.answer()
        }),
        None => HttpResponse::InternalServerError().finish(),
    }
}

/// The offer number of `/lp/click/{n}`; `None` for `/lp/click`.
fn offer_number(req: &HttpRequest) -> Result<Option<usize>, Refusal> {
    match req.match_info().get("n") {
        None => Ok(None),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(Refusal::BadNumber),
        },
    }
}

fn answer(edge: &Edge, req: &HttpRequest) -> Result<HttpResponse, Refusal> {
    if let Some(too_long) = uri_too_long(req) {
        return Ok(too_long);
    }
    let n = offer_number(req)?;
    let mut params = ClickParams::parse(req.query_string());
    // The visit's cost was counted with the visit.
    params.cost.clear();
    params.cost_micros = 0;
    params.cost_currency.clear();
    let from_query = params.extra.remove("click").filter(|h| !h.is_empty());
    let cookie = cookie_value(req, COOKIE).and_then(VisitCookie::parse);
    let visit_hash = match (&from_query, &cookie) {
        (Some(hash), _) => hash.as_str(),
        (None, Some(cookie)) => cookie.click_hash,
        (None, None) => return Err(Refusal::NoVisit),
    };
    let visit = edge
        .keys
        .verify(visit_hash)
        .map_err(|e| Refusal::BadVisit(e.to_string()))?;
    // The cookie tells the visit's set only when it is about this visit.
    let cookie = cookie.filter(|c| c.click_hash == visit_hash);
    with_flow(&edge.registry, &visit.flow_id.to_string(), |flow| {
        let flow = flow.ok_or(Refusal::UnknownFlow)?;
        if !matches!(flow.status(), FlowStatus::Active | FlowStatus::Unspecified) {
            return Ok(edge.inactive_flow(flow, &params));
        }
        let through = ClickThrough {
            visit_hash,
            visit,
            cookie,
            n,
        };
        through.answer(edge, req, flow, &params)
    })
}

struct ClickThrough<'a> {
    visit_hash: &'a str,
    visit: ClickHashInfo,
    cookie: Option<VisitCookie<'a>>,
    n: Option<usize>,
}

/// The path a click-through continues: the set the cookie names, or else the set the
/// flow's rules choose for this request; when that set has no offers, the flow's own path.
fn offers_path(flow: &Flow, route: Route) -> Option<&Path> {
    let has_offers = |path: &&Path| !path.offers.is_empty();
    routing::path_of(flow, route)
        .filter(has_offers)
        .or_else(|| flow.path.as_ref().filter(has_offers))
}

impl ClickThrough<'_> {
    fn answer(
        &self,
        edge: &Edge,
        req: &HttpRequest,
        flow: &Flow,
        params: &ClickParams,
    ) -> Result<HttpResponse, Refusal> {
        let seen = edge.visitor(req);
        let ts_ms = now_ms();
        let route = match self.cookie {
            Some(cookie) => cookie.route,
            None => {
                let lazy = seen.lazy();
                let attributes = seen.attributes(params, flow, ts_ms, &lazy);
                routing::choose(flow, &attributes, rand::random()).route
            }
        };
        let path = offers_path(flow, route).ok_or(Refusal::NoOffers)?;
        let offer = routing::pick_offer(path, self.n, rand::random()).ok_or(Refusal::NoOffers)?;
        let Some(offer) = crate::caps::offer(&edge.caps, flow, path, offer, ts_ms) else {
            if flow.cap_fallback_url.is_empty() {
                return Ok(edge.inactive_flow(flow, params));
            }
            return Ok(edge.cap_fallback(flow, params));
        };
        let lander_id = self
            .cookie
            .map(|c| c.lander_id)
            .filter(|id| *id != 0)
            .or(match path.landers.as_slice() {
                [only] => Some(only.lander_id),
                _ => None,
            })
            .unwrap_or(0);
        let routing_key = self.visit.routing_key;
        let hit = edge.keys.generate(ts_ms, flow.id, routing_key);
        // The visitor, when the visitor cookie is the visit's (same routing key).
        let visitor_id = cookie_value(req, &edge.visitor_cookie)
            .filter(|vid| visitor::routing_key(vid) == Some(routing_key))
            .map(Cow::Borrowed)
            .unwrap_or_default();
        let values = MacroValues {
            click_hash: &hit,
            flow_id: flow.id,
            seen: &seen,
            ts_ms,
            visitor_id: &visitor_id,
            params,
        };
        let destination = offer_url(offer, &values);
        let funnel = Funnel {
            kind: ClickKind::LanderClick,
            parent_click_hash: self.visit_hash,
            traffic_source_id: flow.traffic_source_id,
            lander_id,
            offer_id: offer.offer_id,
            network_id: offer.network_id,
            external_id: params.external_id(),
            ..Funnel::default()
        };
        let event = seen.event(&values, routing_key, &destination, funnel);
        if let Err(refused) = edge.record(&event, edge.click_trace(&event)) {
            return Ok(refused.answer());
        }
        crate::caps::count(&edge.caps, flow, &hit, offer.offer_id, true, ts_ms);
        traffsure_telemetry::inc_local(&clicks_total().lander_click);
        Ok(edge.send_to(flow, destination))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_reads_back_what_it_holds() {
        for route in [Route::Default, Route::Rule(0), Route::Rule(17)] {
            let cookie = VisitCookie {
                click_hash: "0123456789abcdefghijklmnopqrstuv01234567",
                route,
                lander_id: 42,
            };
            assert_eq!(VisitCookie::parse(&cookie.value()), Some(cookie));
        }
        for bad in [
            "",
            "abc",
            "abc.d",
            "abc.x.1",
            "abc.d.1.2",
            ".d.1",
            "abc.-1.1",
            "abc.d.x",
        ] {
            assert_eq!(VisitCookie::parse(bad), None, "{bad}");
        }
        let header = VisitCookie {
            click_hash: "h",
            route: Route::Default,
            lander_id: 3,
        }
        .header(true)
        .unwrap();
        assert_eq!(
            header.to_str().unwrap(),
            "ts_lp=h.d.3; HttpOnly; SameSite=Lax; Path=/lp; Max-Age=86400; Secure"
        );
    }

    #[test]
    fn the_offer_number_is_a_whole_number_from_one() {
        use actix_web::test::TestRequest;
        let number = |n: &str| {
            offer_number(
                &TestRequest::default()
                    .param("n", n.to_string())
                    .to_http_request(),
            )
        };
        assert_eq!(number("1"), Ok(Some(1)));
        assert_eq!(number("12"), Ok(Some(12)));
        for bad in ["0", "-1", "x", "", "1.5"] {
            assert_eq!(number(bad), Err(Refusal::BadNumber), "{bad}");
        }
        assert_eq!(
            offer_number(&TestRequest::default().to_http_request()),
            Ok(None)
        );
    }

    #[test]
    fn click_throughs_continue_the_visits_set_or_the_flows_path() {
        use traffsure_events::{PathOffer, Rule};
        let offers = |id: u32| Path {
            landers: vec![],
            offers: vec![PathOffer {
                offer_id: id,
                ..PathOffer::default()
            }],
        };
        let flow = Flow {
            rules: vec![
                Rule {
                    path: Some(offers(1)),
                    ..Rule::default()
                },
                Rule::default(),
            ],
            path: Some(offers(2)),
            ..Flow::default()
        };
        let offer_of = |route| offers_path(&flow, route).map(|p| p.offers[0].offer_id);
        assert_eq!(offer_of(Route::Rule(0)), Some(1));
        assert_eq!(offer_of(Route::Rule(1)), Some(2));
        assert_eq!(offer_of(Route::Rule(9)), Some(2));
        assert_eq!(offer_of(Route::Default), Some(2));
        let bare = Flow::default();
        assert_eq!(offers_path(&bare, Route::Default), None);
    }
}
