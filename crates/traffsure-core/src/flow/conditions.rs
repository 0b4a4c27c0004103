//! What each rule condition field accepts and how one of its values matches a click:
//! the shapes of values (ranges of hours, weekdays and versions, AS numbers, languages,
//! domains, flags), their normal form as stored in the flow, and the comparisons
//! `routing` makes with them. Which click attribute a field reads is `routing`'s part.

use crate::cidr::Cidr;
use crate::routing::Version;

/// Click fields a rule condition may test.
#[rustfmt::skip]
pub const RULE_FIELDS: &[&str] = &[
    "country", "device", "os", "browser", "ip", "sub_id", "source",
    "sub1", "sub2", "sub3", "sub4", "sub5", "sub6", "sub7", "sub8", "sub9", "sub10",
    "city", "region", "asn", "as_org", "language", "referrer_domain", "hour", "weekday",
    "os_version", "browser_version", "device_brand", "ip_version", "datacenter", "rate_exceeded",
];

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The stored form of one value of a condition on `field`, or why it is not acceptable.
pub(crate) fn normalize(field: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    let lower = value.to_ascii_lowercase();
    match field {
        "ip" => value
            .parse::<Cidr>()
            .map(|cidr| cidr.to_string())
            .map_err(|e| e.to_string()),
        "country" => {
            if value.len() == 2 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
                Ok(value.to_ascii_uppercase())
            } else {
                Err(format!("{value:?} is not a two-letter country code"))
            }
        }
        "asn" => lower
            .strip_prefix("as")
            .unwrap_or(&lower)
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| n.to_string())
            .ok_or_else(|| format!("{value:?} is not an AS number (13335 or AS13335)")),
        "language" => {
            let ok = lower.split('-').enumerate().all(|(i, part)| {
                let letters = part.bytes().all(|b| b.is_ascii_alphanumeric());
                letters
                    && if i == 0 {
                        (2..=3).contains(&part.len())
                    } else {
                        (1..=8).contains(&part.len())
                    }
            });
            if ok {
                Ok(lower)
            } else {
                Err(format!("{value:?} is not a language tag (en, pt-br)"))
            }
        }
        "referrer_domain" => {
            let domain = lower.trim_end_matches('.');
            let ok = !domain.is_empty()
                && domain.len() <= 253
                && domain.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if ok {
                Ok(domain.to_string())
            } else {
                Err(format!("{value:?} is not a domain name (example.com)"))
            }
        }
        "hour" => range(&lower, |h| h.parse::<u32>().ok().filter(|h| *h < 24))
            .map(|_| lower.clone())
            .ok_or_else(|| format!("{value:?} is not an hour 0-23 or a range of them (9-17)")),
        "weekday" => range(&lower, weekday_number)
            .map(|_| lower.clone())
            .ok_or_else(|| format!("{value:?} is not a weekday (mon..sun) or a range (mon-fri)")),
        "os_version" | "browser_version" => version_bounds(&lower)
            .map(|_| lower.clone())
            .ok_or_else(|| {
                format!("{value:?} is not a version or range (14, 14.2, 14-16, >=15, <100)")
            }),
        "ip_version" => match lower.as_str() {
            "4" | "ipv4" | "v4" => Ok("4".into()),
            "6" | "ipv6" | "v6" => Ok("6".into()),
            _ => Err(format!("{value:?} is not 4 or 6")),
        },
        // Only the coarse families click-ingest gives a click: any other word never matches.
        "device" | "os" | "browser" => {
            let families = crate::user_agent::coarse_families(field).unwrap_or_default();
            if families.contains(&lower.as_str()) {
                Ok(lower)
            } else {
                Err(format!(
                    "{value:?} is not a {} family: use one of {}",
                    if field == "os" { "OS" } else { field },
                    families.join(", ")
                ))
            }
        }
        "datacenter" | "rate_exceeded" => match lower.as_str() {
            "true" | "false" => Ok(lower),
            _ => Err(format!("{value:?} is not true or false")),
        },
        _ if value.is_empty() => Err("values must not be empty".into()),
        _ => Ok(value.to_string()),
    }
}

/// `a` or `a-b` (inclusive; `b` before `a` wraps around, as in `22-6` or `sat-mon`).
fn range(text: &str, item: impl Fn(&str) -> Option<u32>) -> Option<(u32, u32)> {
    match text.split_once('-') {
        Some((a, b)) => Some((item(a.trim())?, item(b.trim())?)),
        None => item(text).map(|a| (a, a)),
    }
}

fn in_range((a, b): (u32, u32), x: u32) -> bool {
    if a <= b {
        (a..=b).contains(&x)
    } else {
        x >= a || x <= b
    }
}

/// `mon` = 1 … `sun` = 7.
fn weekday_number(text: &str) -> Option<u32> {
    let text = text.get(..3)?;
    WEEKDAYS
        .iter()
        .position(|d| *d == text)
        .map(|i| i as u32 + 1)
}

/// Whether `hour` (0-23) is within a stored hour value.
pub(crate) fn hour_in(value: &str, hour: u32) -> bool {
    range(value, |h| h.parse().ok()).is_some_and(|r| in_range(r, hour))
}

/// Whether `weekday` (1 = Monday) is within a stored weekday value.
pub(crate) fn weekday_in(value: &str, weekday: u32) -> bool {
    range(value, weekday_number).is_some_and(|r| in_range(r, weekday))
}

fn version(text: &str) -> Option<(u32, Option<u32>)> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        Some(minor) => Some(minor.parse().ok()?),
        None => None,
    };
    parts.next().is_none().then_some((major, minor))
}

/// The inclusive bounds a version value stands for: `14` is 14.0 to 14.max, `14-16`
/// 14.0 to 16.max, `>=14.2` 14.2 and up, `<15` below 15.0.
fn version_bounds(text: &str) -> Option<(Version, Version)> {
    let low = |(major, minor): (u32, Option<u32>)| Version {
        major,
        minor: minor.unwrap_or(0),
    };
    let high = |(major, minor): (u32, Option<u32>)| Version {
        major,
        minor: minor.unwrap_or(u32::MAX),
    };
    let min = Version { major: 0, minor: 0 };
    let max = Version {
        major: u32::MAX,
        minor: u32::MAX,
    };
    if let Some(v) = text.strip_prefix(">=") {
        return Some((low(version(v)?), max));
    }
    if let Some(v) = text.strip_prefix("<=") {
        return Some((min, high(version(v)?)));
    }
    if let Some(v) = text.strip_prefix('>') {
        let v = high(version(v)?);
        let next = if v.minor == u32::MAX {
            Version {
                major: v.major.checked_add(1)?,
                minor: 0,
            }
        } else {
            Version {
                major: v.major,
                minor: v.minor + 1,
            }
        };
        return Some((next, max));
    }
    if let Some(v) = text.strip_prefix('<') {
        let v = low(version(v)?);
        let before = match (v.major, v.minor) {
            (0, 0) => return None,
            (major, 0) => Version {
                major: major - 1,
                minor: u32::MAX,
            },
            (major, minor) => Version {
                major,
                minor: minor - 1,
            },
        };
        return Some((min, before));
    }
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (version(a)?, version(b)?),
        None => (version(text)?, version(text)?),
    };
    let (from, to) = (low(a), high(b));
    (from <= to).then_some((from, to))
}

/// Whether `version` is within a stored version value.
pub(crate) fn version_in(value: &str, version: Version) -> bool {
    version_bounds(value).is_some_and(|(from, to)| from <= version && version <= to)
}

/// Whether a language tag (`en-us`) is a stored language value: the same tag, or one
/// of its regional forms (`en` holds for `en-us`).
pub(crate) fn language_matches(value: &str, tag: &str) -> bool {
    tag.eq_ignore_ascii_case(value)
        || tag.len() > value.len()
            && tag.as_bytes()[value.len()] == b'-'
            && tag[..value.len()].eq_ignore_ascii_case(value)
}

/// Whether a referrer host is a stored domain or one of its subdomains.
pub(crate) fn domain_matches(value: &str, host: &str) -> bool {
    host.eq_ignore_ascii_case(value)
        || host.len() > value.len()
            && host.as_bytes()[host.len() - value.len() - 1] == b'.'
            && host[host.len() - value.len()..].eq_ignore_ascii_case(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    #[test]
    fn normalizes_or_refuses_values() {
        let ok = |field: &str, value: &str| normalize(field, value).ok();
        assert_eq!(ok("asn", "AS13335").as_deref(), Some("13335"));
        assert_eq!(ok("asn", " 15169 ").as_deref(), Some("15169"));
        assert_eq!(ok("asn", "ASX"), None);
        assert_eq!(ok("asn", "0"), None);
        assert_eq!(ok("language", "pt-BR").as_deref(), Some("pt-br"));
        assert_eq!(ok("language", "english"), None);
        assert_eq!(
            ok("referrer_domain", "Google.com.").as_deref(),
            Some("google.com")
        );
        assert_eq!(ok("referrer_domain", "https://google.com/"), None);
        assert_eq!(ok("hour", "9-17").as_deref(), Some("9-17"));
        assert_eq!(ok("hour", "24"), None);
        assert_eq!(ok("weekday", "Mon-Fri").as_deref(), Some("mon-fri"));
        assert_eq!(ok("weekday", "someday"), None);
        assert_eq!(ok("os_version", ">=14.2").as_deref(), Some(">=14.2"));
        assert_eq!(ok("browser_version", "16-14"), None);
        assert_eq!(ok("browser_version", "1.2.3"), None);
        assert_eq!(ok("ip_version", "IPv6").as_deref(), Some("6"));
        assert_eq!(ok("ip_version", "5"), None);
        assert_eq!(ok("datacenter", "TRUE").as_deref(), Some("true"));
        assert_eq!(ok("rate_exceeded", "yes"), None);
        assert_eq!(ok("city", " Berlin ").as_deref(), Some("Berlin"));
        assert_eq!(ok("city", " "), None);
        assert_eq!(ok("country", "deu"), None);
        // Device, OS and browser: the coarse families alone, lowercase.
        assert_eq!(ok("device", " Mobile ").as_deref(), Some("mobile"));
        assert_eq!(ok("os", "iOS").as_deref(), Some("ios"));
        assert_eq!(ok("browser", "firefox").as_deref(), Some("firefox"));
        assert_eq!(ok("device", "bot").as_deref(), Some("bot"));
        for (field, value) in [
            ("device", "phone"),
            ("os", "windoze"),
            ("browser", "netscape"),
        ] {
            let e = normalize(field, value).err().unwrap_or_default();
            assert!(e.contains(value) && e.contains("other"), "{e}");
        }
        let e = normalize("device", "phone").err().unwrap_or_default();
        assert!(
            e.contains("desktop, mobile, tablet, tv, console, bot, other"),
            "{e}"
        );
        assert!(normalize("os", "").is_err());
        // A brand is free text: makers are open-ended.
        assert_eq!(
            ok("device_brand", "Fairphone").as_deref(),
            Some("Fairphone")
        );
    }

    #[test]
    fn hours_and_weekdays_take_ranges_that_may_wrap() {
        assert!(hour_in("9-17", 9) && hour_in("9-17", 17) && !hour_in("9-17", 18));
        assert!(hour_in("22-6", 23) && hour_in("22-6", 0) && !hour_in("22-6", 12));
        assert!(hour_in("5", 5) && !hour_in("5", 6));
        assert!(weekday_in("mon-fri", 1) && weekday_in("mon-fri", 5) && !weekday_in("mon-fri", 6));
        assert!(weekday_in("sat-mon", 7) && weekday_in("sat-mon", 1) && !weekday_in("sat-mon", 3));
        assert!(weekday_in("sunday", 7));
    }

    #[test]
    fn versions_match_their_bounds() {
        assert!(version_in("14", v(14, 0)) && version_in("14", v(14, 7)));
        assert!(!version_in("14", v(15, 0)));
        assert!(version_in("14-16", v(16, 4)) && !version_in("14-16", v(13, 9)));
        assert!(version_in("14.2-15", v(14, 2)) && !version_in("14.2-15", v(14, 1)));
        assert!(version_in(">=100", v(100, 0)) && !version_in(">=100", v(99, 9)));
        assert!(version_in(">14", v(15, 0)) && !version_in(">14", v(14, 9)));
        assert!(version_in(">14.1", v(14, 2)) && !version_in(">14.1", v(14, 1)));
        assert!(version_in("<15", v(14, 99)) && !version_in("<15", v(15, 0)));
        assert!(version_in("<=10.3", v(10, 3)) && !version_in("<=10.3", v(10, 4)));
    }

    #[test]
    fn languages_and_domains_match_their_subtags_and_subdomains() {
        assert!(language_matches("en", "en-us") && language_matches("en-us", "en-US"));
        assert!(!language_matches("en", "eng") && !language_matches("en-gb", "en-us"));
        assert!(domain_matches("google.com", "www.google.com"));
        assert!(domain_matches("google.com", "google.com"));
        assert!(!domain_matches("google.com", "notgoogle.com"));
    }
}
