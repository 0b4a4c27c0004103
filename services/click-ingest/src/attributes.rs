//! The click attributes only some rules test — city and region (from an optional city
//! database), language (`Accept-Language`), referrer domain, device brand and browser/OS
//! versions (from the user agent) — worked out the first time a condition asks, so a
//! flow without such rules pays nothing for them.
//!
//! Versions and brand are read from the user agent's own tokens (`Chrome/126.0`,
//! `Android 14`, `iPhone OS 17_5`, `SM-S918B`); the coarse families stay
//! `traffsure_core::user_agent`'s.

use std::cell::OnceCell;
use std::net::IpAddr;

use serde::Deserialize;
use traffsure_core::routing::{LazyAttributes, Version};

/// City and region of an address, from a MaxMind-format city database.
#[derive(Default)]
pub struct CityDatabase {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
}

/// Both common layouts: ip-location-db's flat one (`city`, `state1`) and GeoIP2's
/// (`city.names.en`, `subdivisions[0].names.en`).
#[derive(Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow, default)]
    city: Option<CityField<'a>>,
    #[serde(borrow, default)]
    state1: Option<&'a str>,
    #[serde(borrow, default)]
    subdivisions: Option<Vec<Named<'a>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CityField<'a> {
    Flat(&'a str),
    Named(#[serde(borrow)] Named<'a>),
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize)]
struct Names<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

impl Named<'_> {
    fn english(&self) -> Option<String> {
        self.names.as_ref()?.en.map(str::to_string)
    }
}

impl CityDatabase {
    /// Opens `path`; empty = no city database (city and region are always unknown).
    pub fn open(path: &str) -> anyhow::Result<Self> {
        if path.is_empty() {
            return Ok(Self::default());
        }
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| anyhow::anyhow!("cannot open {path}: {e}"))?;
        Ok(Self {
            reader: Some(reader),
        })
    }

    /// City and region of `ip`, empty when unknown.
    pub fn lookup(&self, ip: IpAddr) -> (String, String) {
        let Some(reader) = &self.reader else {
            return Default::default();
        };
        let Ok(Some(record)) = reader.lookup::<CityRecord>(ip) else {
            return Default::default();
        };
        let city = match record.city {
            Some(CityField::Flat(name)) => Some(name.to_string()),
            Some(CityField::Named(named)) => named.english(),
            None => None,
        };
        let region = record.state1.map(str::to_string).or_else(|| {
            record
                .subdivisions
                .as_ref()
                .and_then(|s| s.first())
                .and_then(Named::english)
        });
        (city.unwrap_or_default(), region.unwrap_or_default())
    }
}

/// One click's lazy attributes: the request data they come from, and each answer once
/// worked out.
#[derive(Debug)]
pub struct Lazy<'a> {
    pub city_db: &'a CityDatabaseRef<'a>,
    pub ip: Option<IpAddr>,
    pub accept_language: &'a str,
    pub referrer: &'a str,
    pub user_agent: &'a str,
    pub os: &'a str,
    pub browser: &'a str,
    place: OnceCell<(String, String)>,
    language: OnceCell<String>,
    referrer_domain: OnceCell<String>,
}

/// The city database as a `Lazy` borrows it (so `Lazy` can be `Debug`).
pub struct CityDatabaseRef<'a>(pub &'a CityDatabase);

impl std::fmt::Debug for CityDatabaseRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CityDatabase")
    }
}

impl<'a> Lazy<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        city_db: &'a CityDatabaseRef<'a>,
        ip: Option<IpAddr>,
        accept_language: &'a str,
        referrer: &'a str,
        user_agent: &'a str,
        os: &'a str,
        browser: &'a str,
    ) -> Self {
        Self {
            city_db,
            ip,
            accept_language,
            referrer,
            user_agent,
            os,
            browser,
            place: OnceCell::new(),
            language: OnceCell::new(),
            referrer_domain: OnceCell::new(),
        }
    }

    fn place(&self) -> &(String, String) {
        self.place.get_or_init(|| match self.ip {
            Some(ip) => self.city_db.0.lookup(ip),
            None => Default::default(),
        })
    }
}

impl LazyAttributes for Lazy<'_> {
    fn city(&self) -> &str {
        &self.place().0
    }
    fn region(&self) -> &str {
        &self.place().1
    }
    fn language(&self) -> &str {
        self.language
            .get_or_init(|| first_language(self.accept_language))
    }
    fn referrer_domain(&self) -> &str {
        self.referrer_domain
            .get_or_init(|| referrer_domain(self.referrer))
    }
    fn device_brand(&self) -> &str {
        device_brand(self.user_agent)
    }
    fn os_version(&self) -> Option<Version> {
        os_version(self.os, self.user_agent)
    }
    fn browser_version(&self) -> Option<Version> {
        browser_version(self.browser, self.user_agent)
    }
}

/// The visitor's preferred language: the `Accept-Language` tag with the highest weight
/// (the first of equals), lowercase; empty when none.
pub fn first_language(header: &str) -> String {
    let mut best: Option<(&str, f32)> = None;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or_default().trim();
        if tag.is_empty() || tag == "*" {
            continue;
        }
        let weight = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if weight > 0.0 && best.is_none_or(|(_, w)| weight > w) {
            best = Some((tag, weight));
        }
    }
    best.map(|(tag, _)| tag.to_ascii_lowercase())
        .unwrap_or_default()
}

/// The host of a referrer URL, lowercase; empty when there is none.
pub fn referrer_domain(referrer: &str) -> String {
    let Some((_, rest)) = referrer.trim().split_once("://") else {
        return String::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = if host.starts_with('[') {
        host.split(']').next().map(|h| &h[1..]).unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The number right after `token` in `ua` (`Chrome/126.0` → 126.0), with `_` or `.`
/// between major and minor.
fn version_after(ua: &str, token: &str) -> Option<Version> {
    let at = ua.find(token)? + token.len();
    let rest = &ua[at..];
    let digits = |s: &str| -> Option<(u32, usize)> {
        let end = s
            .bytes()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(s.len());
        Some((s[..end].parse().ok()?, end))
    };
    let (major, end) = digits(rest)?;
    let minor = match rest[end..].strip_prefix(['.', '_']) {
        Some(more) => digits(more).map_or(0, |(minor, _)| minor),
        None => 0,
    };
    Some(Version { major, minor })
}

/// The version of the browser family `browser` in `ua`.
pub fn browser_version(browser: &str, ua: &str) -> Option<Version> {
    let tokens: &[&str] = match browser {
        "chrome" => &["Chrome/", "CriOS/"],
        "firefox" => &["Firefox/", "FxiOS/"],
        "edge" => &["Edg/", "EdgA/", "EdgiOS/", "Edge/"],
        "opera" => &["OPR/", "OPiOS/", "Opera/"],
        "samsung" => &["SamsungBrowser/"],
        "yandex" => &["YaBrowser/"],
        "safari" => &["Version/"],
        "ie" => &["MSIE ", "rv:"],
        _ => &[],
    };
    tokens.iter().find_map(|t| version_after(ua, t))
}

/// The version of the OS family `os` in `ua` (Windows as its NT number: 10.0 for
/// Windows 10 and 11, 6.1 for Windows 7).
pub fn os_version(os: &str, ua: &str) -> Option<Version> {
    let tokens: &[&str] = match os {
        "ios" => &["iPhone OS ", "CPU OS ", "iPad; CPU OS "],
        "android" => &["Android "],
        "windows" => &["Windows NT "],
        "macos" => &["Mac OS X "],
        "chromeos" => &["CrOS x86_64 ", "CrOS aarch64 ", "CrOS armv7l "],
        _ => &[],
    };
    tokens.iter().find_map(|t| version_after(ua, t))
}

/// The device maker a user agent names, lowercase; empty when it names none.
pub fn device_brand(ua: &str) -> &'static str {
    const BRANDS: &[(&str, &str)] = &[
        ("iPhone", "apple"),
        ("iPad", "apple"),
        ("iPod", "apple"),
        ("Macintosh", "apple"),
        ("SAMSUNG", "samsung"),
        ("Samsung", "samsung"),
        ("SM-", "samsung"),
        ("GT-", "samsung"),
        ("Pixel", "google"),
        ("Nexus", "google"),
        ("HUAWEI", "huawei"),
        ("Huawei", "huawei"),
        ("HONOR", "honor"),
        ("Honor", "honor"),
        ("Xiaomi", "xiaomi"),
        ("Redmi", "xiaomi"),
        ("POCO", "xiaomi"),
        ("OnePlus", "oneplus"),
        ("OPPO", "oppo"),
        ("CPH", "oppo"),
        ("vivo", "vivo"),
        ("RMX", "realme"),
        ("moto", "motorola"),
        ("Motorola", "motorola"),
        ("Nokia", "nokia"),
        ("LG-", "lg"),
        ("LM-", "lg"),
        ("Sony", "sony"),
        ("Xperia", "sony"),
    ];
    // Brands appear in the parenthesised platform part, not in browser tokens.
    let platform = ua
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map_or("", |(inside, _)| inside);
    BRANDS
        .iter()
        .find(|(token, _)| platform.contains(token))
        .map_or("", |(_, brand)| brand)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const GALAXY: &str = "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.6478.71 Mobile Safari/537.36";
    const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/125.0.2535.92";
    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0";

    fn v(major: u32, minor: u32) -> Option<Version> {
        Some(Version { major, minor })
    }

    #[test]
    fn reads_versions_and_brands_from_the_user_agent() {
        assert_eq!(os_version("ios", IPHONE), v(17, 5));
        assert_eq!(browser_version("safari", IPHONE), v(17, 5));
        assert_eq!(device_brand(IPHONE), "apple");
        assert_eq!(os_version("android", GALAXY), v(14, 0));
        assert_eq!(browser_version("chrome", GALAXY), v(126, 0));
        assert_eq!(device_brand(GALAXY), "samsung");
        assert_eq!(os_version("windows", WINDOWS), v(10, 0));
        assert_eq!(browser_version("edge", WINDOWS), v(125, 0));
        assert_eq!(device_brand(WINDOWS), "");
        assert_eq!(browser_version("firefox", FIREFOX), v(127, 0));
        assert_eq!(os_version("linux", FIREFOX), None);
        assert_eq!(browser_version("chrome", "curl/8.0"), None);
    }

    #[test]
    fn picks_the_preferred_language() {
        assert_eq!(first_language("de-DE,de;q=0.9,en;q=0.8"), "de-de");
        assert_eq!(first_language("en;q=0.5, fr;q=0.9"), "fr");
        assert_eq!(first_language("*, es"), "es");
        assert_eq!(first_language("it;q=0"), "");
        assert_eq!(first_language(""), "");
    }

    #[test]
    fn reads_the_referrer_host() {
        assert_eq!(
            referrer_domain("https://www.Google.com/search?q=x"),
            "www.google.com"
        );
        assert_eq!(
            referrer_domain("http://user@news.example:8080/a"),
            "news.example"
        );
        assert_eq!(referrer_domain("https://[2001:db8::1]/x"), "2001:db8::1");
        assert_eq!(referrer_domain("android-app://com.x/"), "com.x");
        assert_eq!(referrer_domain("not a url"), "");
    }
}
