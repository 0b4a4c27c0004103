//! Which outbound postbacks a conversion fires, and the request each one sends.
//!
//! Decides firing conditions (status, goal, `disable_postbacks`, enabled) and fills the
//! URL and body templates; delivery, retries, the SSRF guard and the exchange rate behind
//! `{revenue_converted}` are left to others.

use std::borrow::Cow;

use traffsure_core::flow::{outbound_postbacks, postback_type_word};
use traffsure_core::format_micros;
use traffsure_core::macros::{encode_component, render};
use traffsure_core::objects::scoped::{dedup_firing, scope_matches};
use traffsure_core::vocab::Vocabulary;
use traffsure_events::{Click, Conversion, ConversionStatus, Flow, Impression, OutboundPostback};

/// The word a status has in macros and in `on_status`; empty for a conversion without
/// one, which fires nothing.
pub fn status_name(status: ConversionStatus) -> &'static str {
    status.specified_word().unwrap_or_default()
}

/// Whether `outbound` fires for this version of `conversion`: a `conversion` postback for
/// any conversion, an `event` postback only for a follow-up (not the click's first
/// conversion), a `click` or `impression` postback never.
pub fn fires(outbound: &OutboundPostback, conversion: &Conversion) -> bool {
    if !outbound.enabled || conversion.disable_postbacks {
        return false;
    }
    match postback_type_word(&outbound.r#type) {
        "conversion" => {}
        "event" if conversion.follow_up => {}
        _ => return false,
    }
    let status = status_name(conversion.status());
    let status_matches = match outbound.on_status.as_str() {
        "" | "any" => !status.is_empty(),
        wanted => wanted == status,
    };
    let goal_matches = outbound.goals.is_empty()
        || outbound
            .goals
            .iter()
            .any(|g| g.eq_ignore_ascii_case(&conversion.goal));
    let reason_matches = outbound.reasons.is_empty() || {
        let reason = conversion.reason.trim().to_lowercase();
        outbound.reasons.iter().any(|r| r.to_lowercase() == reason)
    };
    status_matches && goal_matches && reason_matches && scope_matches(outbound, conversion)
}

/// The outbound postbacks of `flow` that fire for `conversion`: its own, its traffic
/// source's, and those of its offers, its source and the global ones; of several that
/// send the same request, only the most specific scope's (`dedup_firing`).
pub fn firing<'f>(flow: &'f Flow, conversion: &Conversion) -> Vec<&'f OutboundPostback> {
    let matching = outbound_postbacks(flow)
        .filter(|o| fires(o, conversion))
        .collect();
    dedup_firing(matching, flow.traffic_source_id)
}

/// A conversion's revenue in the reporting currency, for `{revenue_converted}` and
/// `{currency_converted}`: `None` when no rate converts it, and then the macro is empty
/// (a receiver never gets the amount sent as if it were the reporting currency).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Converted {
    pub revenue_micros: Option<i64>,
    pub currency: String,
}

/// The value of one outbound macro for a conversion, unencoded.
pub fn macro_value<'c>(
    conversion: &'c Conversion,
    converted: &'c Converted,
    name: &str,
) -> Option<Cow<'c, str>> {
    let sub = |i: usize| -> Cow<'c, str> {
        conversion
            .subs
            .get(i)
            .map(|s| Cow::Borrowed(s.as_str()))
            .unwrap_or_default()
    };
    Some(match name {
        "click" => conversion.click_hash.as_str().into(),
        "flow" => conversion.flow_id.to_string().into(),
        "sub_id" => conversion.sub_id.as_str().into(),
        "source" => conversion.source.as_str().into(),
        "goal" => conversion.goal.as_str().into(),
        "status" => status_name(conversion.status()).into(),
        "revenue" => format_micros(conversion.revenue_micros).into(),
        // What the affiliate is paid (the goal's affiliate payout, else the revenue); a
        // conversion from before payouts existed has none and pays its revenue.
        "payout" if conversion.payout_currency.is_empty() => {
            format_micros(conversion.revenue_micros).into()
        }
        "payout" => format_micros(conversion.payout_micros).into(),
        "payout_currency" if conversion.payout_currency.is_empty() => {
            conversion.currency.as_str().into()
        }
        "payout_currency" => conversion.payout_currency.as_str().into(),
        "revenue_converted" => converted
            .revenue_micros
            .map(format_micros)
            .unwrap_or_default()
            .into(),
        "currency_converted" => converted.currency.as_str().into(),
        "uid" => conversion.uid.as_str().into(),
        "currency" => conversion.currency.as_str().into(),
        "country" => conversion.country.as_str().into(),
        "conversion" => conversion.conversion_id.as_str().into(),
        // The traffic source's own click id, from the tracking link's `external_id`.
        "external_id" => conversion.external_id.as_str().into(),
        "reason" => conversion.reason.as_str().into(),
        "impression" => conversion.impression_id.as_str().into(),
        "ts" => (conversion.updated_at_ms.max(conversion.created_at_ms) / 1000)
            .to_string()
            .into(),
        other => {
            let n: usize = other.strip_prefix("sub")?.parse().ok()?;
            if !(1..=10).contains(&n) {
                return None;
            }
            sub(n - 1)
        }
    })
}

/// One HTTP request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    pub method: String,
    pub url: String,
    pub body: String,
    pub content_type: Option<&'static str>,
}

/// Fills the templates of `outbound` for `conversion`: URL-encoded values in the URL and
/// form bodies, JSON-escaped values in JSON bodies.
pub fn build_request(
    outbound: &OutboundPostback,
    conversion: &Conversion,
    converted: &Converted,
) -> OutboundRequest {
    build_request_with(outbound, &|name| macro_value(conversion, converted, name))
}

/// The value of one macro of a click postback: the click's own, no conversion's.
pub fn click_macro_value<'c>(click: &'c Click, name: &str) -> Option<Cow<'c, str>> {
    Some(match name {
        "click" => click.click_hash.as_str().into(),
        "impression" => click.impression_id.as_str().into(),
        "visitor" => click.visitor_id.as_str().into(),
        "external_id" => click.external_id.as_str().into(),
        other => return seen_macro_value(&Seen::of_click(click), other),
    })
}

/// The value of one macro of an impression postback.
pub fn impression_macro_value<'i>(impression: &'i Impression, name: &str) -> Option<Cow<'i, str>> {
    Some(match name {
        "impression" => impression.impression_id.as_str().into(),
        "visitor" => impression.visitor_id.as_str().into(),
        "external_id" => impression.external_id.as_str().into(),
        other => return seen_macro_value(&Seen::of_impression(impression), other),
    })
}

/// What a click and an impression both carry, for their shared macros.
struct Seen<'a> {
    flow_id: u32,
    ts_ms: i64,
    sub_id: &'a str,
    source: &'a str,
    subs: &'a [String],
    country: &'a str,
    device: &'a str,
    os: &'a str,
    browser: &'a str,
    cost_micros: i64,
}

impl<'a> Seen<'a> {
    fn of_click(c: &'a Click) -> Self {
        Self {
            flow_id: c.flow_id,
            ts_ms: c.ts_ms,
            sub_id: &c.sub_id,
            source: &c.source,
            subs: &c.subs,
            country: &c.country,
            device: &c.device,
            os: &c.os,
            browser: &c.browser,
            cost_micros: c.cost_micros,
        }
    }

    fn of_impression(i: &'a Impression) -> Self {
        Self {
            flow_id: i.flow_id,
            ts_ms: i.ts_ms,
            sub_id: &i.sub_id,
            source: &i.source,
            subs: &i.subs,
            country: &i.country,
            device: &i.device,
            os: &i.os,
            browser: &i.browser,
            cost_micros: i.cost_micros,
        }
    }
}

fn seen_macro_value<'a>(seen: &Seen<'a>, name: &str) -> Option<Cow<'a, str>> {
    Some(match name {
        "flow" => seen.flow_id.to_string().into(),
        "sub_id" => seen.sub_id.into(),
        "source" => seen.source.into(),
        "country" => seen.country.into(),
        "device" => seen.device.into(),
        "os" => seen.os.into(),
        "browser" => seen.browser.into(),
        "cost" => format_micros(seen.cost_micros).into(),
        "ts" => (seen.ts_ms / 1000).to_string().into(),
        other => {
            let n: usize = other.strip_prefix("sub")?.parse().ok()?;
            if !(1..=10).contains(&n) {
                return None;
            }
            seen.subs
                .get(n - 1)
                .map(|s| Cow::Borrowed(s.as_str()))
                .unwrap_or_default()
        }
    })
}

/// Fills the templates of `outbound` with what `lookup` gives each macro.
pub fn build_request_with<'v>(
    outbound: &OutboundPostback,
    lookup: &dyn Fn(&str) -> Option<Cow<'v, str>>,
) -> OutboundRequest {
    let url = render(&outbound.url, lookup);
    let method = if outbound.method.eq_ignore_ascii_case("POST") {
        "POST"
    } else {
        "GET"
    };
    let (body, content_type) = if method == "GET" {
        (String::new(), None)
    } else if outbound.body_format == "json" {
        (
            render_json(&outbound.body_template, lookup),
            Some("application/json"),
        )
    } else {
        (
            render(&outbound.body_template, lookup),
            Some("application/x-www-form-urlencoded"),
        )
    };
    OutboundRequest {
        method: method.to_string(),
        url,
        body,
        content_type,
    }
}

/// Fills a JSON body template: each macro's value is escaped for use inside a JSON
/// string, e.g. `{"click": "{click}"}`.
fn render_json<'v>(template: &str, lookup: &dyn Fn(&str) -> Option<Cow<'v, str>>) -> String {
    // `render` URL-encodes what the lookup returns, so the lookup hands it a marker that
    // survives encoding and the real, JSON-escaped value replaces it afterwards.
    let mut values = Vec::new();
    let marked = render(template, |name| {
        let value = lookup(name)?;
        values.push(json_escape(&value));
        Some(format!("\u{1}{}\u{1}", values.len() - 1).into())
    });
    let marker = encode_component("\u{1}").into_owned();
    let mut out = String::with_capacity(marked.len());
    let mut parts = marked.split(marker.as_str());
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    // Parts alternate: value index, literal text, value index, literal text…
    while let (Some(index), Some(text)) = (parts.next(), parts.next()) {
        match index.parse::<usize>().ok().and_then(|i| values.get(i)) {
            Some(value) => out.push_str(value),
            None => out.push_str(index),
        }
        out.push_str(text);
    }
    out
}

fn json_escape(value: &str) -> String {
    let quoted = serde_json::Value::String(value.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversion(status: ConversionStatus, goal: &str) -> Conversion {
        let mut c = Conversion {
            conversion_id: "cv1".into(),
            version: 2,
            click_hash: "h123".into(),
            flow_id: 7,
            goal: goal.into(),
            revenue_micros: 12_500_000,
            currency: "USD".into(),
            uid: "tx 1&2".into(),
            country: "DE".into(),
            source: "src".into(),
            sub_id: "s\"q".into(),
            subs: vec!["a".into(), "".into(), "c/d".into()],
            updated_at_ms: 1_700_000_000_123,
            ..Conversion::default()
        };
        c.set_status(status);
        c
    }

    fn outbound(on_status: &str, goals: &[&str]) -> OutboundPostback {
        OutboundPostback {
            id: "o".into(),
            url: "https://s.test/pb?c={click}&st={status}&r={revenue}&u={uid}&s1={sub1}&s3={sub3}&s9={sub9}&x={bogus}".into(),
            method: "GET".into(),
            body_format: "form".into(),
            goals: goals.iter().map(|g| g.to_string()).collect(),
            on_status: on_status.into(),
            enabled: true,
            ..OutboundPostback::default()
        }
    }

    #[test]
    fn fires_by_status_goal_and_switches() {
        let approved_sale = conversion(ConversionStatus::Approved, "sale");
        assert!(fires(&outbound("approved", &[]), &approved_sale));
        assert!(fires(&outbound("any", &["SALE"]), &approved_sale));
        assert!(!fires(&outbound("pending", &[]), &approved_sale));
        assert!(!fires(&outbound("any", &["lead"]), &approved_sale));
        let rejected = conversion(ConversionStatus::Rejected, "sale");
        assert!(fires(&outbound("rejected", &["sale"]), &rejected));
        assert!(!fires(&outbound("approved", &[]), &rejected));
        let mut disabled = outbound("any", &[]);
        disabled.enabled = false;
        assert!(!fires(&disabled, &approved_sale));
        let mut quiet = approved_sale.clone();
        quiet.disable_postbacks = true;
        assert!(!fires(&outbound("any", &[]), &quiet));
    }

    #[test]
    fn fires_only_for_chosen_reasons_case_insensitively() {
        let mut fraud = conversion(ConversionStatus::Rejected, "sale");
        fraud.reason = "Fraud".into();
        let mut on_fraud = outbound("rejected", &[]);
        on_fraud.reasons = vec!["fraud".into(), "duplicate".into()];
        on_fraud.url = "https://s.test/pb?c={click}&why={reason}".into();
        assert!(fires(&on_fraud, &fraud));
        assert!(
            fires(&outbound("rejected", &[]), &fraud),
            "no reasons = any"
        );
        let mut other = fraud.clone();
        other.reason = "bad geo".into();
        assert!(!fires(&on_fraud, &other));
        other.reason.clear();
        assert!(!fires(&on_fraud, &other), "a reason list needs a reason");
        assert_eq!(
            build_request(&on_fraud, &other, &Converted::default()).url,
            "https://s.test/pb?c=h123&why="
        );
        fraud.reason = "Fraud & co".into();
        on_fraud.reasons.push("fraud & co".into());
        assert_eq!(
            build_request(&on_fraud, &fraud, &Converted::default()).url,
            "https://s.test/pb?c=h123&why=Fraud%20%26%20co"
        );
    }

    #[test]
    fn fills_the_url_with_encoded_values() {
        let c = conversion(ConversionStatus::Approved, "sale");
        let request = build_request(&outbound("any", &[]), &c, &Converted::default());
        assert_eq!(request.method, "GET");
        assert_eq!(
            request.url,
            "https://s.test/pb?c=h123&st=approved&r=12.5&u=tx%201%262&s1=a&s3=c%2Fd&s9=&x={bogus}"
        );
        assert!(request.body.is_empty());
        let none = Converted::default();
        assert_eq!(macro_value(&c, &none, "ts").as_deref(), Some("1700000000"));
        assert_eq!(macro_value(&c, &none, "sub11"), None);
    }

    #[test]
    fn the_traffic_source_postback_fires_with_its_click_id() {
        let mut c = conversion(ConversionStatus::Approved, "sale");
        c.external_id = "zone 9/abc".into();
        let mut source = outbound("approved", &[]);
        source.id = "source-3".into();
        source.url = "https://push.test/pb?visitor_id={external_id}&payout={payout}".into();
        let flow = Flow {
            outbound_postbacks: vec![outbound("any", &["lead"])],
            traffic_source_postback: Some(Box::new(source.clone())),
            ..Flow::default()
        };
        let fired = firing(&flow, &c);
        assert_eq!(fired, [&source]);
        assert_eq!(
            build_request(fired[0], &c, &Converted::default()).url,
            "https://push.test/pb?visitor_id=zone%209%2Fabc&payout=12.5"
        );
    }

    #[test]
    fn payout_is_the_affiliates_and_revenue_the_advertisers() {
        let mut c = conversion(ConversionStatus::Approved, "sale");
        let mut o = outbound("any", &[]);
        o.url = "https://s.test/pb?r={revenue}&p={payout}&pc={payout_currency}".into();
        // Before payouts existed, a conversion's payout was its revenue.
        assert_eq!(
            build_request(&o, &c, &Converted::default()).url,
            "https://s.test/pb?r=12.5&p=12.5&pc=USD"
        );
        c.payout_micros = 4_000_000;
        c.payout_currency = "EUR".into();
        assert_eq!(
            build_request(&o, &c, &Converted::default()).url,
            "https://s.test/pb?r=12.5&p=4&pc=EUR"
        );
    }

    #[test]
    fn every_macro_a_flow_may_use_has_a_value() {
        let c = conversion(ConversionStatus::Approved, "sale");
        for name in traffsure_core::flow::OUTBOUND_MACROS {
            assert!(
                macro_value(&c, &Converted::default(), name).is_some(),
                "{name}"
            );
        }
    }

    #[test]
    fn a_flow_may_use_every_macro_that_has_a_value() {
        // The other way round: a macro the dispatcher fills for a conversion is one a
        // conversion or event postback may be saved with (`{impression}` among them).
        use traffsure_core::flow::{
            outbound_macros, CLICK_POSTBACK_MACROS, DESTINATION_MACROS, IMPRESSION_POSTBACK_MACROS,
            OUTBOUND_MACROS,
        };
        let mut c = conversion(ConversionStatus::Approved, "sale");
        c.impression_id = "imp-1".into();
        let none = Converted::default();
        let candidates = OUTBOUND_MACROS
            .iter()
            .chain(CLICK_POSTBACK_MACROS)
            .chain(IMPRESSION_POSTBACK_MACROS)
            .chain(DESTINATION_MACROS)
            .chain(&["sub0", "sub11", "bogus", "offer", "profit"]);
        for name in candidates {
            let filled = macro_value(&c, &none, name).is_some();
            for kind in ["conversion", "event"] {
                let allowed = outbound_macros(kind).unwrap_or_default().contains(name);
                assert_eq!(filled, allowed, "{{{name}}} in a {kind} postback");
            }
        }
        let mut o = outbound("any", &[]);
        o.url = "https://s.test/pb?c={click}&i={impression}".into();
        assert_eq!(
            build_request(&o, &c, &none).url,
            "https://s.test/pb?c=h123&i=imp-1"
        );
    }

    #[test]
    fn revenue_goes_as_sent_and_converted() {
        let mut c = conversion(ConversionStatus::Approved, "sale");
        c.currency = "EUR".into();
        let mut o = outbound("any", &[]);
        o.url = "https://s.test/pb?r={revenue}&c={currency}&rc={revenue_converted}&cc={currency_converted}".into();
        let converted = Converted {
            revenue_micros: Some(15_625_000),
            currency: "USD".into(),
        };
        assert_eq!(
            build_request(&o, &c, &converted).url,
            "https://s.test/pb?r=12.5&c=EUR&rc=15.625&cc=USD"
        );
        let without_rate = Converted {
            revenue_micros: None,
            currency: "USD".into(),
        };
        assert_eq!(
            build_request(&o, &c, &without_rate).url,
            "https://s.test/pb?r=12.5&c=EUR&rc=&cc=USD"
        );
    }

    #[test]
    fn fills_form_and_json_bodies() {
        let c = conversion(ConversionStatus::Pending, "lead");
        let mut post = outbound("any", &[]);
        post.method = "POST".into();
        post.body_template = "click={click}&uid={uid}".into();
        let none = Converted::default();
        let form = build_request(&post, &c, &none);
        assert_eq!(form.body, "click=h123&uid=tx%201%262");
        assert_eq!(form.content_type, Some("application/x-www-form-urlencoded"));

        post.body_format = "json".into();
        post.body_template =
            r#"{"click":"{click}","sub_id":"{sub_id}","status":"{status}","r":{revenue}}"#.into();
        let json = build_request(&post, &c, &none);
        assert_eq!(json.content_type, Some("application/json"));
        let parsed: serde_json::Value =
            serde_json::from_str(&json.body).expect("the body is valid JSON");
        assert_eq!(parsed["sub_id"], "s\"q");
        assert_eq!(parsed["status"], "pending");
        assert_eq!(parsed["r"], 12.5);
    }

    #[test]
    fn scoped_postbacks_fire_for_their_offer_and_once_per_request() {
        let mut c = conversion(ConversionStatus::Approved, "sale");
        c.offer_id = 4;
        let scoped = |id: &str, url: &str, scope: &str, scope_id: u32| OutboundPostback {
            id: id.into(),
            url: url.into(),
            scope: scope.into(),
            scope_id,
            ..outbound("any", &[])
        };
        let own = OutboundPostback {
            url: "https://same.test/?c={click}".into(),
            ..outbound("approved", &[])
        };
        let global = scoped("global.a", "https://same.test/?c={click}", "global", 0);
        let other_offer = scoped("offer-5.a", "https://o5.test/?c={click}", "offer", 5);
        let this_offer = scoped("offer-4.a", "https://o4.test/?c={click}", "offer", 4);
        let flow = Flow {
            outbound_postbacks: vec![own.clone()],
            scoped_postbacks: vec![this_offer.clone(), other_offer, global.clone()],
            ..Flow::default()
        };
        assert_eq!(firing(&flow, &c), [&own, &this_offer]);
        // A pending version: the flow's own does not fire, so the global one does.
        let pending = conversion(ConversionStatus::Pending, "sale");
        assert_eq!(firing(&flow, &pending), [&global]);
    }
}
