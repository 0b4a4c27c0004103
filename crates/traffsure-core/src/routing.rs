//! Which destination a click goes to: bot routing, ordered rules, weighted rotation, and
//! the flow's fallback URL.
//!
//! Pure functions over the stored `Flow`; the edge supplies the click's attributes and a
//! random number, so every choice here is reproducible in tests. Destinations come only
//! from the flow: nothing a visitor sends can name one.

use std::net::IpAddr;

use traffsure_events::{Condition, Destination, Flow, Rule};

use crate::cidr::Cidr;

/// The attributes of a click that rule conditions test.
#[derive(Debug, Clone, Default)]
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
            other => other
                .strip_prefix("sub")
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| self.subs.get(i))
                .map(String::as_str)
                .unwrap_or(""),
        }
    }
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

/// True when the condition holds for the click: the value is among the condition's
/// values (case-insensitively; CIDR blocks for `ip`), or not among them when negated.
pub fn condition_holds(condition: &Condition, click: &ClickAttributes<'_>) -> bool {
    let found = if condition.field == "ip" {
        match click.ip {
            Some(ip) => condition
                .values
                .iter()
                .any(|v| v.parse::<Cidr>().is_ok_and(|block| block.contains(ip))),
            None => false,
        }
    } else {
        let value = click.field(&condition.field);
        condition
            .values
            .iter()
            .any(|v| v.trim().eq_ignore_ascii_case(value))
    };
    found != condition.negate
}

/// True when every condition of the rule holds (a rule without conditions never matches).
pub fn rule_matches(rule: &Rule, click: &ClickAttributes<'_>) -> bool {
    !rule.conditions.is_empty() && rule.conditions.iter().all(|c| condition_holds(c, click))
}

/// Picks one destination by weight (a weight of 0 counts as 1). `random` is any number;
/// the same number always picks the same destination.
pub fn pick_weighted(destinations: &[Destination], random: u64) -> Option<&Destination> {
    let weight = |d: &Destination| u64::from(d.weight.max(1));
    let total: u64 = destinations.iter().map(weight).sum();
    if total == 0 {
        return None;
    }
    let mut point = random % total;
    for destination in destinations {
        let w = weight(destination);
        if point < w {
            return Some(destination);
        }
        point -= w;
    }
    destinations.last()
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

    #[test]
    fn a_missing_ip_never_matches_an_ip_condition() {
        let c = cond("ip", false, &["0.0.0.0/0"]);
        assert!(!condition_holds(&c, &ClickAttributes::default()));
        let not = cond("ip", true, &["10.0.0.0/8"]);
        assert!(condition_holds(&not, &ClickAttributes::default()));
        assert!(!rule_matches(&Rule::default(), &ClickAttributes::default()));
    }
}
