//! Which destination a click goes to: bot routing, ordered rules, weighted rotation, the
//! flow's fallback URL, and the funnel (`Path`) of landers and offers a rule or the flow
//! sends its visitors down instead.
//!
//! Pure functions over the stored `Flow`; the edge supplies the click's attributes and a
//! random number, so every choice here is reproducible in tests. Destinations come only
//! from the flow: nothing a visitor sends can name one. How each condition's values
//! match is `flow::conditions`'s part.

use std::net::IpAddr;

use traffsure_events::{Condition, Destination, Flow, Path, PathLander, PathOffer, Rule};

use crate::cidr::Cidr;
use crate::flow::conditions;

/// A browser or OS version: major and minor number (minor 0 when not known).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

/// Attributes of a click that only some rules test, worked out when a condition first
/// asks for one (a city lookup or a header parse costs nothing to a flow without such a
/// rule). Each answers empty / `None` when unknown.
pub trait LazyAttributes: std::fmt::Debug {
    fn city(&self) -> &str {
        ""
    }
    fn region(&self) -> &str {
        ""
    }
    /// The visitor's first `Accept-Language` tag, lowercase (`en-us`).
    fn language(&self) -> &str {
        ""
    }
    /// The referrer's host, lowercase.
    fn referrer_domain(&self) -> &str {
        ""
    }
    /// The device maker, lowercase (`apple`, `samsung`).
    fn device_brand(&self) -> &str {
        ""
    }
    fn os_version(&self) -> Option<Version> {
        None
    }
    fn browser_version(&self) -> Option<Version> {
        None
    }
}

/// No lazy attribute is known.
#[derive(Debug)]
pub struct NoLazyAttributes;

impl LazyAttributes for NoLazyAttributes {}

/// Lazy attributes known up front.
#[derive(Debug, Clone, Default)]
pub struct KnownAttributes {
    pub city: String,
    pub region: String,
    pub language: String,
    pub referrer_domain: String,
    pub device_brand: String,
    pub os_version: Option<Version>,
    pub browser_version: Option<Version>,
}

impl LazyAttributes for KnownAttributes {
    fn city(&self) -> &str {
        &self.city
    }
    fn region(&self) -> &str {
        &self.region
    }
    fn language(&self) -> &str {
        &self.language
    }
    fn referrer_domain(&self) -> &str {
        &self.referrer_domain
    }
    fn device_brand(&self) -> &str {
        &self.device_brand
    }
    fn os_version(&self) -> Option<Version> {
        self.os_version
    }
    fn browser_version(&self) -> Option<Version> {
        self.browser_version
    }
}

/// The attributes of a click that rule conditions test.
#[derive(Debug, Clone)]
pub struct ClickAttributes<'a> {
    pub country: &'a str,
    pub device: &'a str,
    pub os: &'a str,
    pub browser: &'a str,
    pub ip: Option<IpAddr>,
    pub sub_id: &'a str,
    pub source: &'a str,
    /// sub1..sub10 in order (missing ones count as empty).
    pub subs: &'a [String],
    pub is_bot: bool,
    /// The autonomous system of the address (0 when unknown) and its organisation.
    pub asn: u32,
    pub as_org: &'a str,
    pub datacenter: bool,
    pub rate_exceeded: bool,
    /// When the click happened, and the IANA time zone hour and weekday are read in
    /// (empty = UTC).
    pub ts_ms: i64,
    pub time_zone: &'a str,
    pub lazy: &'a dyn LazyAttributes,
}

impl Default for ClickAttributes<'_> {
    fn default() -> Self {
        Self {
            country: "",
            device: "",
            os: "",
            browser: "",
            ip: None,
            sub_id: "",
            source: "",
            subs: &[],
            is_bot: false,
            asn: 0,
            as_org: "",
            datacenter: false,
            rate_exceeded: false,
            ts_ms: 0,
            time_zone: "",
            lazy: &NoLazyAttributes,
        }
    }
}

impl ClickAttributes<'_> {
    fn field(&self, name: &str) -> &str {
        match name {
            "country" => self.country,
            "device" => self.device,
            "os" => self.os,
            "browser" => self.browser,
            "sub_id" => self.sub_id,
            "source" => self.source,
            "city" => self.lazy.city(),
            "region" => self.lazy.region(),
            "device_brand" => self.lazy.device_brand(),
            other => other
                .strip_prefix("sub")
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| self.subs.get(i))
                .map(String::as_str)
                .unwrap_or(""),
        }
    }

    /// The hour (0-23) and weekday (1 = Monday) of the click in its flow's time zone;
    /// `None` when the zone is unknown.
    fn local_time(&self) -> Option<(u32, u32)> {
        let zone = zone(self.time_zone)?;
        let zoned = jiff::Timestamp::from_millisecond(self.ts_ms)
            .ok()?
            .to_zoned(zone);
        Some((
            u32::try_from(zoned.hour()).ok()?,
            u32::try_from(zoned.weekday().to_monday_one_offset()).ok()?,
        ))
    }
}

thread_local! {
    /// Time zones already read from the tz database, by name: a flow's hour rule does
    /// not parse its zone on every click.
    static ZONES: std::cell::RefCell<rustc_hash::FxHashMap<String, jiff::tz::TimeZone>> =
        std::cell::RefCell::default();
}

/// The time zone called `name` (empty = UTC), or `None` when there is none of that name.
pub fn zone(name: &str) -> Option<jiff::tz::TimeZone> {
    if name.is_empty() {
        return Some(jiff::tz::TimeZone::UTC);
    }
    ZONES.with_borrow_mut(|zones| {
        if let Some(zone) = zones.get(name) {
            return Some(zone.clone());
        }
        let zone = jiff::tz::TimeZone::get(name).ok()?;
        if zones.len() >= 1000 {
            zones.clear();
        }
        zones.insert(name.to_string(), zone.clone());
        Some(zone)
    })
}

/// Why a destination was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The click is a bot and the flow has a bot URL.
    Bot,
    /// The rule at this index matched.
    Rule(usize),
    /// No rule matched: the flow's default destinations.
    Default,
}

/// A chosen destination URL template (macros not yet filled) and why it was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice<'f> {
    pub url: &'f str,
    pub route: Route,
}

/// True when the condition holds for the click: the click's value is among the
/// condition's values, or not among them when negated. Text compares
/// case-insensitively; `ip` takes CIDR blocks, `as_org` a part of the organisation's
/// name, `hour`, `weekday` and the versions ranges (`flow::conditions`). A click whose
/// value is unknown (no address, no version) is among no values.
pub fn condition_holds(condition: &Condition, click: &ClickAttributes<'_>) -> bool {
    let values = &condition.values;
    let flag = |on: bool| {
        values
            .iter()
            .any(|v| v.eq_ignore_ascii_case(if on { "true" } else { "false" }))
    };
    let found = match condition.field.as_str() {
        "ip" => click.ip.is_some_and(|ip| {
            values
                .iter()
                .any(|v| v.parse::<Cidr>().is_ok_and(|block| block.contains(ip)))
        }),
        "asn" => click.asn != 0 && values.iter().any(|v| v.parse() == Ok(click.asn)),
        "as_org" => {
            let org = click.as_org.to_ascii_lowercase();
            !org.is_empty()
                && values
                    .iter()
                    .any(|v| !v.is_empty() && org.contains(&v.to_ascii_lowercase()))
        }
        "language" => {
            let tag = click.lazy.language();
            !tag.is_empty() && values.iter().any(|v| conditions::language_matches(v, tag))
        }
        "referrer_domain" => {
            let host = click.lazy.referrer_domain();
            !host.is_empty() && values.iter().any(|v| conditions::domain_matches(v, host))
        }
        "hour" => click
            .local_time()
            .is_some_and(|(hour, _)| values.iter().any(|v| conditions::hour_in(v, hour))),
        "weekday" => click
            .local_time()
            .is_some_and(|(_, day)| values.iter().any(|v| conditions::weekday_in(v, day))),
        "os_version" => click
            .lazy
            .os_version()
            .is_some_and(|version| values.iter().any(|v| conditions::version_in(v, version))),
        "browser_version" => click
            .lazy
            .browser_version()
            .is_some_and(|version| values.iter().any(|v| conditions::version_in(v, version))),
        "ip_version" => click.ip.is_some_and(|ip| {
            let four = match ip {
                IpAddr::V4(_) => true,
                IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
            };
            values.iter().any(|v| v == if four { "4" } else { "6" })
        }),
        "datacenter" => flag(click.datacenter),
        "rate_exceeded" => flag(click.rate_exceeded),
        name => {
            let value = click.field(name);
            values.iter().any(|v| v.trim().eq_ignore_ascii_case(value))
        }
    };
    found != condition.negate
}

/// True when every condition of the rule holds and, when the rule has `any_of` groups,
/// every condition of at least one group (a rule without conditions never matches).
pub fn rule_matches(rule: &Rule, click: &ClickAttributes<'_>) -> bool {
    let all = |conditions: &[Condition]| conditions.iter().all(|c| condition_holds(c, click));
    let any_group = rule.any_of.is_empty()
        || rule
            .any_of
            .iter()
            .any(|group| !group.conditions.is_empty() && all(&group.conditions));
    (!rule.conditions.is_empty() || !rule.any_of.is_empty()) && all(&rule.conditions) && any_group
}

/// Picks one destination by weight (a weight of 0 counts as 1). `random` is any number;
/// the same number always picks the same destination.
pub fn pick_weighted(destinations: &[Destination], random: u64) -> Option<&Destination> {
    pick_by_weight(destinations, |d| d.weight, random)
}

/// Picks one item by the weight `weight` gives it (0 counts as 1), as `pick_weighted`.
pub fn pick_by_weight<T>(items: &[T], weight: impl Fn(&T) -> u32, random: u64) -> Option<&T> {
    let weight = |item: &T| u64::from(weight(item).max(1));
    let total: u64 = items.iter().map(weight).sum();
    if total == 0 {
        return None;
    }
    let mut point = random % total;
    for item in items {
        let w = weight(item);
        if point < w {
            return Some(item);
        }
        point -= w;
    }
    items.last()
}

/// True when the path sends visitors anywhere (it has landers or offers).
pub fn path_in_use(path: Option<&Path>) -> bool {
    path.is_some_and(|p| !p.landers.is_empty() || !p.offers.is_empty())
}

/// The funnel of the set a route chose: the matched rule's path, or the flow's for the
/// default set, when it has landers or offers; `None` for bots sent to the bot URL and
/// for sets that go to their destinations.
pub fn path_of(flow: &Flow, route: Route) -> Option<&Path> {
    let path = match route {
        Route::Bot => None,
        Route::Rule(index) => flow.rules.get(index).and_then(|r| r.path.as_ref()),
        Route::Default => flow.path.as_ref(),
    };
    path.filter(|p| path_in_use(Some(p)))
}

/// The first step of a funnel: a lander, or an offer when the path has no landers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step<'f> {
    Lander(&'f PathLander),
    Offer(&'f PathOffer),
}

impl<'f> Step<'f> {
    /// The step's URL template.
    pub fn url(&self) -> &'f str {
        match *self {
            Step::Lander(lander) => &lander.url,
            Step::Offer(offer) => &offer.url,
        }
    }
}

/// Where a visit down `path` goes first: a lander by weight, else an offer by weight.
pub fn first_step(path: &Path, random: u64) -> Option<Step<'_>> {
    match pick_by_weight(&path.landers, |l| l.weight, random) {
        Some(lander) => Some(Step::Lander(lander)),
        None => pick_offer(path, None, random).map(Step::Offer),
    }
}

/// The offer a lander click-through goes to: the `n`-th offer of the path (1-based) when
/// `n` names one, else one by weight (so a lander link to an offer no longer in the path
/// still reaches one of its offers).
pub fn pick_offer(path: &Path, n: Option<usize>, random: u64) -> Option<&PathOffer> {
    n.and_then(|n| n.checked_sub(1))
        .and_then(|i| path.offers.get(i))
        .or_else(|| pick_by_weight(&path.offers, |o| o.weight, random))
}

/// The offer `offer_id` as the flow's paths hold it (a rule's, else the flow's own), for
/// what the offer says about conversions of its clicks.
pub fn path_offer(flow: &Flow, offer_id: u32) -> Option<&PathOffer> {
    if offer_id == 0 {
        return None;
    }
    flow.rules
        .iter()
        .filter_map(|r| r.path.as_ref())
        .chain(flow.path.as_ref())
        .flat_map(|p| &p.offers)
        .find(|o| o.offer_id == offer_id)
}

/// Chooses where a click goes: bots to the bot URL when the flow has one, else the first
/// matching rule's set, else the default set, each by weighted rotation; the flow's
/// `destination_url` when the chosen set is empty.
pub fn choose<'f>(flow: &'f Flow, click: &ClickAttributes<'_>, random: u64) -> Choice<'f> {
    if click.is_bot && !flow.bot_url.is_empty() {
        return Choice {
            url: &flow.bot_url,
            route: Route::Bot,
        };
    }
    let (set, route) = match flow.rules.iter().position(|r| rule_matches(r, click)) {
        Some(index) => (&flow.rules[index].destinations, Route::Rule(index)),
        None => (&flow.destinations, Route::Default),
    };
    let url = pick_weighted(set, random)
        .map(|d| d.url.as_str())
        .filter(|url| !url.is_empty())
        .unwrap_or(&flow.destination_url);
    Choice { url, route }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dest(url: &str, weight: u32) -> Destination {
        Destination {
            url: url.into(),
            weight,
        }
    }

    fn cond(field: &str, negate: bool, values: &[&str]) -> Condition {
        Condition {
            field: field.into(),
            negate,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn rule(conditions: Vec<Condition>, url: &str) -> Rule {
        Rule {
            name: String::new(),
            conditions,
            destinations: vec![dest(url, 1)],
            ..Rule::default()
        }
    }

    fn flow() -> Flow {
        Flow {
            destination_url: "https://fallback.test/".into(),
            destinations: vec![dest("https://a.test/", 3), dest("https://b.test/", 1)],
            rules: vec![
                rule(
                    vec![
                        cond("country", false, &["DE", "AT"]),
                        cond("device", false, &["mobile"]),
                    ],
                    "https://de-mobile.test/",
                ),
                rule(
                    vec![cond("ip", false, &["10.0.0.0/8", "2001:db8::/32"])],
                    "https://office.test/",
                ),
                rule(
                    vec![
                        cond("os", true, &["ios", "android"]),
                        cond("sub3", false, &["Push"]),
                    ],
                    "https://push-desktop.test/",
                ),
                rule(
                    vec![cond("browser", false, &["firefox"])],
                    "https://fx.test/",
                ),
                rule(
                    vec![
                        cond("source", false, &["tiktok"]),
                        cond("sub_id", false, &["x1"]),
                    ],
                    "https://tt.test/",
                ),
            ],
            bot_url: "https://bots.test/".into(),
            ..Flow::default()
        }
    }

    fn subs(values: &[(usize, &str)]) -> Vec<String> {
        let mut subs = vec![String::new(); 10];
        for (n, v) in values {
            subs[n - 1] = v.to_string();
        }
        subs
    }

    #[test]
    fn each_rule_kind_routes() {
        let flow = flow();
        let none = subs(&[]);
        let base = ClickAttributes {
            country: "US",
            device: "desktop",
            os: "windows",
            browser: "chrome",
            subs: &none,
            ..Default::default()
        };
        let url = |click: &ClickAttributes<'_>| choose(&flow, click, 0).url.to_string();
        assert_eq!(url(&base), "https://a.test/");
        // Country (case-insensitive) and device together; either alone does not match.
        let de_mobile = ClickAttributes {
            country: "de",
            device: "Mobile",
            ..base.clone()
        };
        assert_eq!(url(&de_mobile), "https://de-mobile.test/");
        assert_eq!(
            url(&ClickAttributes {
                country: "DE",
                ..base.clone()
            }),
            "https://a.test/"
        );
        // IP blocks, v4 and v6.
        let office = ClickAttributes {
            ip: "10.1.2.3".parse().ok(),
            ..base.clone()
        };
        assert_eq!(url(&office), "https://office.test/");
        let office6 = ClickAttributes {
            ip: "2001:db8::5".parse().ok(),
            ..base.clone()
        };
        assert_eq!(url(&office6), "https://office.test/");
        let elsewhere = ClickAttributes {
            ip: "11.0.0.1".parse().ok(),
            ..base.clone()
        };
        assert_eq!(url(&elsewhere), "https://a.test/");
        // Negated OS plus a sub parameter.
        let push = subs(&[(3, "push")]);
        let desktop_push = ClickAttributes {
            subs: &push,
            ..base.clone()
        };
        assert_eq!(url(&desktop_push), "https://push-desktop.test/");
        let ios_push = ClickAttributes {
            os: "iOS",
            subs: &push,
            ..base.clone()
        };
        assert_eq!(url(&ios_push), "https://a.test/");
        // Browser.
        assert_eq!(
            url(&ClickAttributes {
                browser: "Firefox",
                ..base.clone()
            }),
            "https://fx.test/"
        );
        // Source and sub_id.
        let tt = ClickAttributes {
            source: "TikTok",
            sub_id: "x1",
            ..base.clone()
        };
        assert_eq!(url(&tt), "https://tt.test/");
        assert_eq!(choose(&flow, &tt, 0).route, Route::Rule(4));
        // The first matching rule wins.
        let both = ClickAttributes {
            country: "AT",
            device: "mobile",
            browser: "firefox",
            ..base.clone()
        };
        assert_eq!(choose(&flow, &both, 0).route, Route::Rule(0));
    }

    #[test]
    fn bots_go_to_the_bot_url_when_set() {
        let mut flow = flow();
        let bot = ClickAttributes {
            is_bot: true,
            country: "DE",
            device: "mobile",
            ..Default::default()
        };
        assert_eq!(
            choose(&flow, &bot, 0),
            Choice {
                url: "https://bots.test/",
                route: Route::Bot
            }
        );
        flow.bot_url.clear();
        assert_eq!(choose(&flow, &bot, 0).route, Route::Rule(0));
    }

    #[test]
    fn falls_back_to_the_destination_url() {
        let mut flow = flow();
        flow.destinations.clear();
        assert_eq!(
            choose(&flow, &ClickAttributes::default(), 7).url,
            "https://fallback.test/"
        );
        flow.destinations = vec![dest("", 1)];
        assert_eq!(
            choose(&flow, &ClickAttributes::default(), 7).url,
            "https://fallback.test/"
        );
    }

    #[test]
    fn weighted_rotation_follows_the_weights() {
        let set = [dest("a", 3), dest("b", 1), dest("c", 0)];
        let picks: Vec<&str> = (0..5)
            .map(|r| pick_weighted(&set, r).unwrap().url.as_str())
            .collect();
        assert_eq!(picks, ["a", "a", "a", "b", "c"]);
        assert!(pick_weighted(&[], 3).is_none());
        // Over many random numbers the split approaches 3:1:1.
        let mut counts = [0u32; 3];
        for _ in 0..50_000 {
            let url = &pick_weighted(&set, rand::random()).unwrap().url;
            counts[(url.as_bytes()[0] - b'a') as usize] += 1;
        }
        let share = |n: u32| f64::from(n) / 50_000.0;
        assert!((share(counts[0]) - 0.6).abs() < 0.02, "{counts:?}");
        assert!((share(counts[1]) - 0.2).abs() < 0.02, "{counts:?}");
        assert!((share(counts[2]) - 0.2).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn weighted_pick_always_lands_in_the_set() {
        // Property: any weights, any random number — the pick is a member, and a
        // destination is picked exactly as often as its weight over one full cycle.
        let mut seed = 0x1234_5678_9ABC_DEF0_u64;
        for _ in 0..300 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (seed >> 60) as usize + 1;
            let set: Vec<Destination> = (0..n)
                .map(|i| dest(&i.to_string(), ((seed >> (i * 3)) % 7) as u32))
                .collect();
            let total: u64 = set.iter().map(|d| u64::from(d.weight.max(1))).sum();
            let mut counts = vec![0u64; n];
            for r in 0..total {
                let picked = pick_weighted(&set, r.wrapping_add(seed.wrapping_mul(total))).unwrap();
                counts[picked.url.parse::<usize>().unwrap()] += 1;
            }
            for (i, d) in set.iter().enumerate() {
                assert_eq!(counts[i], u64::from(d.weight.max(1)), "{set:?}");
            }
        }
    }

    fn lander(id: u32, weight: u32) -> PathLander {
        PathLander {
            lander_id: id,
            url: format!("https://lp{id}.test/?c={{click}}"),
            weight,
        }
    }

    fn offer(id: u32, weight: u32) -> PathOffer {
        PathOffer {
            offer_id: id,
            url: format!("https://offer{id}.test/"),
            weight,
            network_id: 100 + id,
            ..PathOffer::default()
        }
    }

    #[test]
    fn paths_replace_the_destinations_of_their_set() {
        let mut flow = flow();
        let funnel = Path {
            landers: vec![lander(1, 7), lander(2, 3)],
            offers: vec![offer(10, 1), offer(11, 1)],
        };
        flow.rules[1].path = Some(funnel.clone());
        flow.path = Some(Path {
            landers: vec![],
            offers: vec![offer(20, 1)],
        });
        let office = ClickAttributes {
            ip: "10.1.2.3".parse().ok(),
            ..Default::default()
        };
        let route = choose(&flow, &office, 0).route;
        assert_eq!(path_of(&flow, route), Some(&funnel));
        // Landers come first; the split over one full cycle is exactly 7:3.
        let mut counts = [0u32; 3];
        for r in 0..10 {
            match first_step(&funnel, r) {
                Some(Step::Lander(l)) => counts[l.lander_id as usize] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(counts, [0, 7, 3]);
        // The default set's path has offers only: the visit goes straight to one.
        let route = choose(&flow, &ClickAttributes::default(), 0).route;
        assert_eq!(route, Route::Default);
        let default_path = path_of(&flow, route).unwrap();
        assert!(matches!(first_step(default_path, 5), Some(Step::Offer(o)) if o.offer_id == 20));
        // Bots sent to the bot URL and rules without a path use no path; an empty path
        // is no path.
        assert_eq!(path_of(&flow, Route::Bot), None);
        assert_eq!(path_of(&flow, Route::Rule(0)), None);
        flow.rules[0].path = Some(Path::default());
        assert_eq!(path_of(&flow, Route::Rule(0)), None);
        assert_eq!(path_of(&flow, Route::Rule(99)), None);
        assert_eq!(first_step(&Path::default(), 1), None);
    }

    #[test]
    fn offers_are_picked_by_number_or_weight() {
        let path = Path {
            landers: vec![lander(1, 1)],
            offers: vec![offer(10, 1), offer(11, 3), offer(12, 0)],
        };
        let id = |n: Option<usize>, r: u64| pick_offer(&path, n, r).unwrap().offer_id;
        assert_eq!(
            (id(Some(1), 3), id(Some(2), 0), id(Some(3), 0)),
            (10, 11, 12)
        );
        // Out of range (and 0) fall back to the weighted pick: 1:3:1.
        let picks: Vec<u32> = (0..5).map(|r| id(Some(4), r)).collect();
        assert_eq!(picks, [10, 11, 11, 11, 12]);
        assert_eq!(id(Some(0), 0), 10);
        assert_eq!(id(None, 4), 12);
        assert_eq!(pick_offer(&Path::default(), Some(1), 0), None);
    }

    #[test]
    fn finds_an_offer_in_any_path_of_the_flow() {
        let mut flow = flow();
        let mut special = offer(11, 1);
        special.has_payout = true;
        flow.rules[2].path = Some(Path {
            landers: vec![],
            offers: vec![special.clone()],
        });
        flow.path = Some(Path {
            landers: vec![],
            offers: vec![offer(10, 1)],
        });
        assert_eq!(path_offer(&flow, 11), Some(&special));
        assert_eq!(path_offer(&flow, 10).map(|o| o.offer_id), Some(10));
        assert_eq!(path_offer(&flow, 12), None);
        assert_eq!(path_offer(&flow, 0), None);
    }

    #[test]
    fn a_missing_ip_never_matches_an_ip_condition() {
        let c = cond("ip", false, &["0.0.0.0/0"]);
        assert!(!condition_holds(&c, &ClickAttributes::default()));
        let not = cond("ip", true, &["10.0.0.0/8"]);
        assert!(condition_holds(&not, &ClickAttributes::default()));
        assert!(!rule_matches(&Rule::default(), &ClickAttributes::default()));
    }

    fn any_of_rule(all: Vec<Condition>, groups: Vec<Vec<Condition>>, url: &str) -> Rule {
        Rule {
            any_of: groups
                .into_iter()
                .map(|conditions| traffsure_events::ConditionGroup { conditions })
                .collect(),
            ..rule(all, url)
        }
    }

    #[test]
    fn or_groups_hold_alongside_the_and_conditions() {
        // Mobile clicks from DE or from AT with sub1=x.
        let r = any_of_rule(
            vec![cond("device", false, &["mobile"])],
            vec![
                vec![cond("country", false, &["DE"])],
                vec![cond("country", false, &["AT"]), cond("sub1", false, &["x"])],
            ],
            "https://r.test/",
        );
        let x = subs(&[(1, "x")]);
        let none = subs(&[]);
        let click = |country, device, subs| ClickAttributes {
            country,
            device,
            subs,
            ..Default::default()
        };
        assert!(rule_matches(&r, &click("DE", "mobile", &none)));
        assert!(rule_matches(&r, &click("AT", "mobile", &x)));
        assert!(!rule_matches(&r, &click("AT", "mobile", &none)));
        assert!(!rule_matches(&r, &click("DE", "desktop", &none)));
        // Groups alone: any one of them.
        let only = any_of_rule(
            vec![],
            vec![
                vec![cond("os", false, &["ios"])],
                vec![cond("os", false, &["android"])],
            ],
            "https://r.test/",
        );
        let os = |os| ClickAttributes {
            os,
            ..Default::default()
        };
        assert!(rule_matches(&only, &os("android")) && !rule_matches(&only, &os("windows")));
        // An empty group never holds.
        let empty = any_of_rule(vec![], vec![vec![]], "https://r.test/");
        assert!(!rule_matches(&empty, &os("ios")));
    }

    #[test]
    fn the_visitor_conditions_read_their_attributes() {
        let known = KnownAttributes {
            city: "Berlin".into(),
            region: "Land Berlin".into(),
            language: "de-de".into(),
            referrer_domain: "news.google.com".into(),
            device_brand: "samsung".into(),
            os_version: Some(Version {
                major: 14,
                minor: 0,
            }),
            browser_version: Some(Version {
                major: 126,
                minor: 0,
            }),
        };
        // 2026-12-07 08:30 UTC is a Monday, 09:30 in Berlin.
        let monday_0830_utc = 1_796_632_200_000;
        let click = ClickAttributes {
            ip: "2001:db8::1".parse().ok(),
            asn: 3320,
            as_org: "Deutsche Telekom AG",
            datacenter: true,
            ts_ms: monday_0830_utc,
            time_zone: "Europe/Berlin",
            lazy: &known,
            ..Default::default()
        };
        let holds =
            |field: &str, values: &[&str]| condition_holds(&cond(field, false, values), &click);
        assert!(holds("city", &["berlin"]) && !holds("city", &["Hamburg"]));
        assert!(holds("region", &["land berlin"]));
        assert!(holds("language", &["de"]) && !holds("language", &["en"]));
        assert!(
            holds("referrer_domain", &["google.com"]) && !holds("referrer_domain", &["bing.com"])
        );
        assert!(holds("device_brand", &["Samsung"]) && !holds("device_brand", &["apple"]));
        assert!(holds("os_version", &["12-14"]) && !holds("os_version", &["<14"]));
        assert!(holds("browser_version", &[">=120"]) && !holds("browser_version", &["<=125"]));
        assert!(holds("asn", &["3320"]) && !holds("asn", &["13335"]));
        assert!(holds("as_org", &["telekom"]) && !holds("as_org", &["amazon"]));
        assert!(holds("ip_version", &["6"]) && !holds("ip_version", &["4"]));
        assert!(holds("datacenter", &["true"]) && !holds("datacenter", &["false"]));
        assert!(holds("rate_exceeded", &["false"]) && !holds("rate_exceeded", &["true"]));
        assert!(holds("hour", &["9"]) && !holds("hour", &["8"]));
        assert!(holds("weekday", &["mon-fri"]) && !holds("weekday", &["sat-sun"]));
        let utc = ClickAttributes {
            time_zone: "",
            ..click.clone()
        };
        assert!(condition_holds(&cond("hour", false, &["8"]), &utc));
        // Unknown values are among no values: a negated condition holds.
        let unknown = ClickAttributes::default();
        for field in [
            "asn",
            "as_org",
            "language",
            "os_version",
            "ip_version",
            "city",
        ] {
            assert!(
                !condition_holds(&cond(field, false, &["1"]), &unknown),
                "{field}"
            );
            assert!(
                condition_holds(&cond(field, true, &["1"]), &unknown),
                "{field}"
            );
        }
        let mapped = ClickAttributes {
            ip: "::ffff:192.0.2.1".parse().ok(),
            ..Default::default()
        };
        assert!(condition_holds(&cond("ip_version", false, &["4"]), &mapped));
    }
}
