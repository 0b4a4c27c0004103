//! A visitor's browser, operating system and device from a `User-Agent` header, with
//! uap-core's regexes (through the `ua-parser` crate), and whether it names a bot (see
//! `bots`).
//!
//! uap-core names families precisely (`Chrome Mobile WebView`, `Mac OS X`, `Samsung
//! SM-S918B`); flow rules and reports also group by the coarse families TraffSure has
//! always used, derived here by fixed mappings (docs/visitors.md): browser `chrome`,
//! `safari`, `firefox`, `edge`, `opera`, `samsung`, `yandex`, `ie`, `bot` or `other`; OS
//! `windows`, `macos`, `ios`, `android`, `linux`, `chromeos` or `other`; device `desktop`,
//! `mobile`, `tablet`, `tv`, `console`, `bot` or `other`. uap-core has no device type, so
//! the device comes from the OS and a few words of the user agent (one search for all of
//! them, Aho-Corasick). Loading and reloading the data and caching answers are
//! `ua_data`'s.

use std::borrow::Cow;

use traffsure_events::BotReason;

use crate::bots::{BotPatterns, CrawlerListError};

/// What a user agent says about the visitor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserAgent {
    /// The coarse device type (see the module header).
    pub device: &'static str,
    /// The coarse operating system family.
    pub os: &'static str,
    /// The coarse browser family.
    pub browser: &'static str,
    /// uap-core's browser family (`Other` when unknown) and version.
    pub browser_family: String,
    pub browser_major: String,
    pub browser_minor: String,
    /// uap-core's OS family (`Other` when unknown) and version.
    pub os_family: String,
    pub os_major: String,
    pub os_minor: String,
    /// uap-core's device family (`Other` when unknown, `Spider` for crawlers), brand and model.
    pub device_family: String,
    pub device_brand: String,
    pub device_model: String,
    /// Why the user agent alone names a bot: `Crawler` or `Headless`.
    pub bot: Option<BotReason>,
}

impl UserAgent {
    /// True for crawlers, headless browsers, automation and HTTP libraries.
    pub fn is_bot(&self) -> bool {
        self.bot.is_some()
    }
}

/// Why the user-agent data could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("regexes: {0}")]
    RegexesFormat(#[from] serde_yaml_ng::Error),
    #[error("regexes do not compile: {0}")]
    RegexesCompile(#[from] ua_parser::Error),
    #[error("crawler list: {0}")]
    Crawlers(#[from] CrawlerListError),
}

/// uap-core's regexes and the bot patterns, compiled.
pub struct Parser {
    uap: ua_parser::Extractor<'static>,
    bots: BotPatterns,
}

impl Parser {
    /// Compiles uap-core's `regexes.yaml` and crawler-user-agents' JSON list.
    pub fn new(regexes_yaml: &str, crawlers_json: &str) -> Result<Self, DataError> {
        let regexes: ua_parser::Regexes<'static> = serde_yaml_ng::from_str(regexes_yaml)?;
        Ok(Self {
            uap: ua_parser::Extractor::try_from(regexes)?,
            bots: BotPatterns::from_crawler_list(crawlers_json)?,
        })
    }

    /// The bot patterns in use.
    pub fn bots(&self) -> &BotPatterns {
        &self.bots
    }

    /// Reads a user agent. An empty one is `other` everywhere and not a bot by itself (the
    /// edge can be told to treat it as one).
    pub fn parse(&self, user_agent: &str) -> UserAgent {
        if user_agent.trim().is_empty() {
            return UserAgent {
                device: "other",
                os: "other",
                browser: "other",
                browser_family: "Other".into(),
                os_family: "Other".into(),
                device_family: "Other".into(),
                ..UserAgent::default()
            };
        }
        let (browser, os, device) = self.uap.extract(user_agent);
        let text = |v: Option<&str>| v.unwrap_or_default().to_string();
        let cow = |v: &Option<Cow<'_, str>>| v.as_deref().unwrap_or_default().to_string();
        let (browser_family, browser_major, browser_minor) = browser
            .map(|b| (b.family.into_owned(), text(b.major), text(b.minor)))
            .unwrap_or_else(|| ("Other".into(), String::new(), String::new()));
        let (os_family, os_major, os_minor) = os
            .map(|o| (o.os.to_string(), cow(&o.major), cow(&o.minor)))
            .unwrap_or_else(|| ("Other".into(), String::new(), String::new()));
        let (device_family, device_brand, device_model) = device
            .map(|d| (d.device.to_string(), cow(&d.brand), cow(&d.model)))
            .unwrap_or_else(|| ("Other".into(), String::new(), String::new()));
        let bot = self.bots.reason(user_agent, &device_family, &device_brand);
        let os_coarse = coarse_os(&os_family);
        let (device, browser) = if bot.is_some() {
            ("bot", "bot")
        } else {
            (
                device_type(Found::of(user_agent), os_coarse, &device_family),
                coarse_browser(&browser_family),
            )
        };
        UserAgent {
            device,
            os: os_coarse,
            browser,
            browser_family,
            browser_major,
            browser_minor,
            os_family,
            os_major,
            os_minor,
            device_family,
            device_brand,
            device_model,
            bot,
        }
    }
}

/// How many of uap-core's regexes this process has compiled since it started: each is
/// compiled the first time a user agent's prefilter selects it, not at load (the data's
/// memory is mostly compiled regexes and their match scratch space, and real traffic
/// needs a fraction of them); every reload starts again from none.
pub fn regexes_compiled() -> usize {
    regex_filtered::compiled_on_use()
}

/// Every coarse browser family a click can have: what [`coarse_browser`] answers, and
/// `bot` for a bot. The only values a rule condition on `browser` can match.
pub const COARSE_BROWSERS: &[&str] = &[
    "chrome", "safari", "firefox", "edge", "opera", "samsung", "yandex", "ie", "bot", "other",
];
/// Every coarse operating system family a click can have: what [`coarse_os`] answers.
pub const COARSE_OSES: &[&str] = &[
    "windows", "macos", "ios", "android", "linux", "chromeos", "other",
];
/// Every coarse device type a click can have: what the device type from the user
/// agent's words answers, and `bot` for a bot.
pub const COARSE_DEVICES: &[&str] = &[
    "desktop", "mobile", "tablet", "tv", "console", "bot", "other",
];

/// The coarse families of a click attribute (`device`, `os` or `browser`); `None` for
/// any other.
pub fn coarse_families(attribute: &str) -> Option<&'static [&'static str]> {
    match attribute {
        "device" => Some(COARSE_DEVICES),
        "os" => Some(COARSE_OSES),
        "browser" => Some(COARSE_BROWSERS),
        _ => None,
    }
}

/// The coarse browser family of a uap-core browser family.
pub fn coarse_browser(family: &str) -> &'static str {
    match family {
        f if f.starts_with("Edge") => "edge",
        f if f.starts_with("Opera") => "opera",
        "Samsung Internet" => "samsung",
        "Yandex Browser" => "yandex",
        f if f.starts_with("Firefox") => "firefox",
        f if f.starts_with("Chrome") || f == "Chromium" => "chrome",
        "IE" | "IE Mobile" => "ie",
        f if f.starts_with("Safari") || f.starts_with("Mobile Safari") => "safari",
        _ => "other",
    }
}

/// The coarse OS family of a uap-core OS family.
pub fn coarse_os(family: &str) -> &'static str {
    match family {
        "iOS" | "iPadOS" => "ios",
        "Android" => "android",
        f if f.starts_with("Windows") => "windows",
        "Chrome OS" | "ChromeOS" => "chromeos",
        "Mac OS X" | "macOS" | "Mac OS" => "macos",
        "Linux" | "Ubuntu" | "Kubuntu" | "Xubuntu" | "Lubuntu" | "Debian" | "Fedora"
        | "Red Hat" | "CentOS" | "SUSE" | "openSUSE" | "Gentoo" | "Mandriva" | "Slackware"
        | "Linux Mint" | "Arch Linux" | "Mageia" | "PCLinuxOS" | "Tizen" | "webOS" => "linux",
        _ => "other",
    }
}

/// Words of a user agent the device type looks for (lowercase).
const FRAGMENTS: &[&str] = &[
    "smart-tv",
    "smarttv",
    "googletv",
    "appletv",
    "hbbtv",
    "tizen",
    "tv",
    "web0s",
    "roku",
    "playstation",
    "xbox",
    "nintendo",
    "tablet",
    "mobile",
    "mobi",
    "ipad",
    "iphone",
    "ipod",
];

const _: () = assert!(FRAGMENTS.len() <= 32);

/// Position of `needle` among the fragments; evaluated at compile time through `has!`,
/// where a fragment missing from the list fails the build.
const fn fragment_index(needle: &str) -> usize {
    const fn same(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
    let mut i = 0;
    while i < FRAGMENTS.len() {
        if same(FRAGMENTS[i], needle) {
            return i;
        }
        i += 1;
    }
    panic!("fragment missing from FRAGMENTS")
}

/// One search for every fragment at once, ASCII case-insensitively (the same as
/// lowercasing the user agent and testing each fragment with `contains`).
fn matcher() -> &'static aho_corasick::AhoCorasick {
    static MATCHER: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    MATCHER.get_or_init(|| {
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(FRAGMENTS)
            .unwrap_or_else(|e| panic!("user-agent fragments do not compile: {e}"))
    })
}

/// The fragments a user agent contains, one bit each.
#[derive(Clone, Copy)]
struct Found(u32);

impl Found {
    fn of(user_agent: &str) -> Self {
        let mut bits = 0u32;
        for m in matcher().find_overlapping_iter(user_agent) {
            bits |= 1 << m.pattern().as_usize();
        }
        Self(bits)
    }
}

/// True when the user agent contains `fragment` (a literal from `FRAGMENTS`).
macro_rules! has {
    ($found:expr, $fragment:literal) => {
        $found.0 & (1u32 << const { fragment_index($fragment) }) != 0
    };
}

/// The coarse device type from the user agent's words, the coarse OS and uap-core's device.
fn device_type(ua: Found, os: &str, device_family: &str) -> &'static str {
    if has!(ua, "smart-tv")
        || has!(ua, "smarttv")
        || has!(ua, "googletv")
        || has!(ua, "appletv")
        || has!(ua, "hbbtv")
        || has!(ua, "tizen") && has!(ua, "tv")
        || has!(ua, "web0s")
        || has!(ua, "roku")
    {
        "tv"
    } else if has!(ua, "playstation") || has!(ua, "xbox") || has!(ua, "nintendo") {
        "console"
    } else if device_family == "iPad"
        || has!(ua, "ipad")
        || has!(ua, "tablet")
        || os == "android" && !has!(ua, "mobile")
    {
        "tablet"
    } else if has!(ua, "mobi") || has!(ua, "iphone") || has!(ua, "ipod") || os == "android" {
        "mobile"
    } else if matches!(os, "windows" | "macos" | "linux" | "chromeos") {
        "desktop"
    } else {
        "other"
    }
}

/// The data `deploy/local/install.sh` installs, compiled once for the tests of this crate.
#[cfg(test)]
pub(crate) fn installed_parser() -> &'static Parser {
    static PARSER: std::sync::OnceLock<Parser> = std::sync::OnceLock::new();
    PARSER.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.local/user-agents");
        let read = |name: &str| {
            std::fs::read_to_string(format!("{dir}/{name}"))
                .unwrap_or_else(|e| panic!("{dir}/{name} (run deploy/local/install.sh): {e}"))
        };
        Parser::new(&read("regexes.yaml"), &read("crawler-user-agents.json"))
            .unwrap_or_else(|e| panic!("installed user-agent data: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One browser a line: the device, operating system and browser read from the user
    /// agent that follows; none of them is a bot.
    const BROWSERS: &str = "\
desktop | windows | chrome | Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36
desktop | windows | edge | Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87
desktop | macos | safari | Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15
desktop | linux | firefox | Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0
mobile | ios | safari | Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1
mobile | ios | chrome | Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1
tablet | ios | safari | Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1
mobile | android | samsung | Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36
tablet | android | chrome | Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36
mobile | android | opera | Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36 OPR/82.0.0.0
mobile | android | chrome | Mozilla/5.0 (Linux; Android 9; CUBOT X20 PRO) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/74.0.3729.136 Mobile Safari/537.36
desktop | chromeos | chrome | Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36
desktop | windows | ie | Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0) like Gecko
tv | linux | safari | Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/538.1 (KHTML, like Gecko) Version/6.0 TV Safari/538.1";

    #[test]
    fn classifies_common_browsers() {
        for line in BROWSERS.lines() {
            let [device, os, browser, ua] = line.splitn(4, " | ").collect::<Vec<_>>()[..] else {
                panic!("malformed line {line:?}");
            };
            let p = installed_parser().parse(ua);
            assert_eq!(
                (p.device, p.os, p.browser, p.is_bot()),
                (device, os, browser, false),
                "{ua}"
            );
        }
    }

    #[test]
    fn reads_versions_brand_and_model() {
        let p = installed_parser().parse("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36");
        assert_eq!(
            (
                p.browser_family.as_str(),
                p.browser_major.as_str(),
                p.browser_minor.as_str()
            ),
            ("Samsung Internet", "25", "0")
        );
        assert_eq!(
            (
                p.os_family.as_str(),
                p.os_major.as_str(),
                p.os_minor.as_str()
            ),
            ("Android", "14", "")
        );
        assert_eq!(
            (
                p.device_family.as_str(),
                p.device_brand.as_str(),
                p.device_model.as_str()
            ),
            ("Samsung SM-S918B", "Samsung", "SM-S918B")
        );
    }

    #[test]
    fn flags_bots_with_their_reason() {
        for (ua, reason) in [
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", BotReason::Crawler),
            ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", BotReason::Crawler),
            ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", BotReason::Crawler),
            ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 Safari/537.36", BotReason::Headless),
            ("curl/8.5.0", BotReason::Headless),
            ("python-requests/2.32.3", BotReason::Headless),
            ("Go-http-client/1.1", BotReason::Headless),
        ] {
            let parsed = installed_parser().parse(ua);
            assert_eq!(parsed.bot, Some(reason), "{ua:?}");
            assert_eq!((parsed.device, parsed.browser), ("bot", "bot"), "{ua:?}");
        }
    }

    #[test]
    fn unknown_and_empty_agents_are_other_not_bots() {
        for ua in ["SomethingNew/1.0", "", "   "] {
            let parsed = installed_parser().parse(ua);
            assert_eq!(
                (parsed.device, parsed.os, parsed.browser, parsed.is_bot()),
                ("other", "other", "other", false),
                "{ua:?}"
            );
        }
    }

    #[test]
    fn coarse_families_map_uap_names() {
        for (family, coarse) in [
            ("Chrome Mobile WebView", "chrome"),
            ("Chrome Mobile iOS", "chrome"),
            ("Chromium", "chrome"),
            ("Mobile Safari UI/WKWebView", "safari"),
            ("Firefox iOS", "firefox"),
            ("Opera Mini", "opera"),
            ("Edge Mobile", "edge"),
            ("IE Mobile", "ie"),
            ("UC Browser", "other"),
        ] {
            assert_eq!(coarse_browser(family), coarse, "{family}");
        }
        for (family, coarse) in [
            ("Windows", "windows"),
            ("Windows Phone", "windows"),
            ("Mac OS X", "macos"),
            ("Ubuntu", "linux"),
            ("Chrome OS", "chromeos"),
            ("iOS", "ios"),
            ("Symbian OS", "other"),
        ] {
            assert_eq!(coarse_os(family), coarse, "{family}");
        }
    }

    #[test]
    fn the_coarse_lists_are_what_the_mappings_answer() {
        // Every arm of each mapping, and names none of them takes.
        let browsers = [
            "Edge",
            "Edge Mobile",
            "Opera",
            "Opera Mini",
            "Samsung Internet",
            "Yandex Browser",
            "Firefox",
            "Firefox iOS",
            "Chrome",
            "Chrome Mobile WebView",
            "Chromium",
            "IE",
            "IE Mobile",
            "Safari",
            "Mobile Safari",
            "Mobile Safari UI/WKWebView",
            "UC Browser",
            "Other",
            "",
        ];
        let mut seen: Vec<&str> = browsers.iter().map(|f| coarse_browser(f)).collect();
        seen.push("bot");
        for word in &seen {
            assert!(COARSE_BROWSERS.contains(word), "browser {word}");
        }
        for word in COARSE_BROWSERS {
            assert!(seen.contains(word), "browser {word} is never given");
        }
        let oses = [
            "iOS",
            "iPadOS",
            "Android",
            "Windows",
            "Windows Phone",
            "Chrome OS",
            "ChromeOS",
            "Mac OS X",
            "macOS",
            "Mac OS",
            "Linux",
            "Ubuntu",
            "Tizen",
            "webOS",
            "Symbian OS",
            "Other",
            "",
        ];
        let seen: Vec<&str> = oses.iter().map(|f| coarse_os(f)).collect();
        for word in &seen {
            assert!(COARSE_OSES.contains(word), "os {word}");
        }
        for word in COARSE_OSES {
            assert!(seen.contains(word), "os {word} is never given");
        }
        // The device of every fragment alone, with every OS and device family.
        let mut seen = vec!["bot"];
        for ua in FRAGMENTS.iter().copied().chain(["", "Mozilla/5.0"]) {
            for os in COARSE_OSES {
                for family in ["iPad", "Other", "Spider"] {
                    seen.push(device_type(Found::of(ua), os, family));
                }
            }
        }
        for word in &seen {
            assert!(COARSE_DEVICES.contains(word), "device {word}");
        }
        for word in COARSE_DEVICES {
            assert!(seen.contains(word), "device {word} is never given");
        }
        assert_eq!(coarse_families("os"), Some(COARSE_OSES));
        assert_eq!(coarse_families("device_brand"), None);
    }

    #[test]
    fn one_pass_search_agrees_with_substring_tests() {
        use rand::seq::IndexedRandom;
        use rand::Rng;
        let pieces: Vec<&str> = FRAGMENTS
            .iter()
            .copied()
            .chain([" ", "/", ";", "Mozilla/5.0", "é", "ТВ", "mob", "t", "x1"])
            .collect();
        let mut rng = rand::rng();
        for _ in 0..20_000 {
            let mut ua = String::new();
            for _ in 0..rng.random_range(0..8) {
                let piece = pieces.choose(&mut rng).copied().unwrap_or_default();
                // Random letter case, as browsers write it.
                ua.extend(piece.chars().map(|c| {
                    if rng.random_bool(0.3) {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                }));
            }
            let lower = ua.to_ascii_lowercase();
            let found = Found::of(&ua);
            for (i, fragment) in FRAGMENTS.iter().enumerate() {
                assert_eq!(
                    found.0 & (1 << i) != 0,
                    lower.contains(fragment),
                    "{ua:?} {fragment}"
                );
            }
        }
    }
}
