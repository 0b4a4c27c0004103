//! Device type, operating system and browser from a `User-Agent` header, and whether it
//! names a known bot.
//!
//! A hand-written classifier rather than a regex database: it runs on every click, must
//! cost well under a microsecond, and reports only the coarse families flow rules and
//! reports group by. Names are fixed strings so rule values can match them; anything not
//! recognised is `other`. All the fragments it looks for are found in one pass over the
//! user agent (Aho-Corasick), then the decisions below only test bits.

/// What a user agent says about the visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserAgent {
    /// `desktop`, `mobile`, `tablet`, `tv`, `console`, `bot` or `other`.
    pub device: &'static str,
    /// `windows`, `macos`, `ios`, `android`, `linux`, `chromeos` or `other`.
    pub os: &'static str,
    /// `chrome`, `safari`, `firefox`, `edge`, `opera`, `samsung`, `yandex`, `ie`, `bot` or `other`.
    pub browser: &'static str,
    /// True for crawlers, monitors, scripts and HTTP libraries.
    pub is_bot: bool,
}

/// Lowercase fragments of user agents that belong to crawlers, link previewers, monitors
/// and HTTP libraries rather than people.
pub const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawl",
    "spider",
    "slurp",
    "mediapartners",
    "facebookexternalhit",
    "facebookcatalog",
    "embedly",
    "preview",
    "headlesschrome",
    "phantomjs",
    "lighthouse",
    "pingdom",
    "uptime",
    "monitor",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "apache-httpclient",
    "libwww-perl",
    "node-fetch",
    "axios/",
    "httpclient",
    "scrapy",
];

/// Every other fragment the classifier looks for (lowercase), after the bot markers.
const FRAGMENTS: &[&str] = &[
    "iphone",
    "ipad",
    "ipod",
    "android",
    "windows",
    "cros",
    "mac os x",
    "macintosh",
    "linux",
    "x11",
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
    "edg/",
    "edge/",
    "edga/",
    "edgios/",
    "opr/",
    "opera",
    "samsungbrowser/",
    "yabrowser/",
    "firefox/",
    "fxios/",
    "chrome/",
    "crios/",
    "chromium/",
    "msie ",
    "trident/",
    "safari/",
    "applewebkit/",
    "mobile/",
];

const _: () = assert!(BOT_MARKERS.len() + FRAGMENTS.len() <= 128);

/// Position of `needle` among the bot markers and fragments; evaluated at compile time
/// through `has!`, where a fragment missing from the lists fails the build.
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
            return BOT_MARKERS.len() + i;
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
            .build(BOT_MARKERS.iter().chain(FRAGMENTS))
            .unwrap_or_else(|e| panic!("user-agent fragments do not compile: {e}"))
    })
}

/// The fragments a user agent contains, one bit each.
#[derive(Clone, Copy)]
struct Found(u128);

impl Found {
    fn of(user_agent: &str) -> Self {
        let mut bits = 0u128;
        for m in matcher().find_overlapping_iter(user_agent) {
            bits |= 1 << m.pattern().as_usize();
        }
        Self(bits)
    }

    fn is_bot(self) -> bool {
        self.0 & ((1u128 << BOT_MARKERS.len()) - 1) != 0
    }
}

/// True when the user agent contains `fragment` (a literal from `FRAGMENTS`).
macro_rules! has {
    ($found:expr, $fragment:literal) => {
        $found.0 & (1u128 << const { fragment_index($fragment) }) != 0
    };
}

/// Classifies a user agent. An empty one is `other` everywhere and not a bot by itself
/// (the edge can be told to treat it as one).
pub fn parse(user_agent: &str) -> UserAgent {
    let ua = Found::of(user_agent);
    if ua.is_bot() {
        return UserAgent {
            device: "bot",
            os: os_of(ua),
            browser: "bot",
            is_bot: true,
        };
    }
    let os = os_of(ua);
    UserAgent {
        device: device_of(ua, os),
        os,
        browser: browser_of(ua),
        is_bot: false,
    }
}

fn os_of(ua: Found) -> &'static str {
    if has!(ua, "iphone") || has!(ua, "ipad") || has!(ua, "ipod") {
        "ios"
    } else if has!(ua, "android") {
        "android"
    } else if has!(ua, "windows") {
        "windows"
    } else if has!(ua, "cros") {
        "chromeos"
    } else if has!(ua, "mac os x") || has!(ua, "macintosh") {
        "macos"
    } else if has!(ua, "linux") || has!(ua, "x11") {
        "linux"
    } else {
        "other"
    }
}

fn device_of(ua: Found, os: &str) -> &'static str {
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
    } else if has!(ua, "ipad") || has!(ua, "tablet") || os == "android" && !has!(ua, "mobile") {
        "tablet"
    } else if has!(ua, "mobi") || has!(ua, "iphone") || has!(ua, "ipod") || os == "android" {
        "mobile"
    } else if matches!(os, "windows" | "macos" | "linux" | "chromeos") {
        "desktop"
    } else {
        "other"
    }
}

fn browser_of(ua: Found) -> &'static str {
    // Order matters: Edge, Opera, Samsung and Yandex also say "chrome" and "safari".
    if has!(ua, "edg/") || has!(ua, "edge/") || has!(ua, "edga/") || has!(ua, "edgios/") {
        "edge"
    } else if has!(ua, "opr/") || has!(ua, "opera") {
        "opera"
    } else if has!(ua, "samsungbrowser/") {
        "samsung"
    } else if has!(ua, "yabrowser/") {
        "yandex"
    } else if has!(ua, "firefox/") || has!(ua, "fxios/") {
        "firefox"
    } else if has!(ua, "chrome/") || has!(ua, "crios/") || has!(ua, "chromium/") {
        "chrome"
    } else if has!(ua, "msie ") || has!(ua, "trident/") {
        "ie"
    } else if has!(ua, "safari/") || has!(ua, "applewebkit/") && has!(ua, "mobile/") {
        "safari"
    } else {
        "other"
    }
}

/// Slots of the per-thread cache behind [`parse_cached`], and the longest user agent it keeps.
const CACHE_SLOTS: usize = 1 << 10;
const CACHE_MAX_LEN: usize = 512;

type CacheSlot = Option<(Box<str>, UserAgent)>;

thread_local! {
    static CACHE: std::cell::RefCell<Vec<CacheSlot>> =
        std::cell::RefCell::new(vec![None; CACHE_SLOTS]);
}

/// [`parse`], remembering recent answers per thread: traffic repeats a few thousand
/// browser builds over and over, and a hit (a hash and a compare) costs a fraction of a
/// scan. The cache is direct-mapped, so a miss replaces one slot and memory stays bounded
/// (at most 1,024 user agents of up to 512 bytes per thread) whatever clients send.
pub fn parse_cached(user_agent: &str) -> UserAgent {
    use std::hash::Hasher as _;
    if user_agent.len() > CACHE_MAX_LEN {
        return parse(user_agent);
    }
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(user_agent.as_bytes());
    // The high bits of a multiplicative mix pick the slot.
    let slot = (hasher.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15)
        >> (64 - CACHE_SLOTS.trailing_zeros())) as usize;
    CACHE.with_borrow_mut(|cache| {
        if let Some((cached, parsed)) = &cache[slot] {
            if **cached == *user_agent {
                return *parsed;
            }
        }
        let parsed = parse(user_agent);
        cache[slot] = Some((user_agent.into(), parsed));
        parsed
    })
}

/// Extra bot markers from configuration (lowercased, empty ones dropped).
pub fn markers_from_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty())
        .collect()
}

/// True when `user_agent` contains one of `markers` (already lowercase).
pub fn matches_any(user_agent: &str, markers: &[String]) -> bool {
    if markers.is_empty() {
        return false;
    }
    let ua = user_agent.to_ascii_lowercase();
    markers.iter().any(|m| ua.contains(m.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_answers_match_parse() {
        // More distinct user agents than slots, so slots are replaced, then all again:
        // every answer must be the one `parse` gives, hit or miss.
        let agents: Vec<String> = (0..3_000)
            .map(|i| match i % 4 {
                0 => format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{i}.0.0.0 Safari/537.36"),
                1 => format!("Mozilla/5.0 (iPhone; CPU iPhone OS 17_{i} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"),
                2 => format!("Googlebot/2.{i} (+http://www.google.com/bot.html)"),
                _ => "x".repeat(i % 700),
            })
            .collect();
        for _ in 0..2 {
            for ua in &agents {
                assert_eq!(parse_cached(ua), parse(ua), "{ua}");
            }
        }
    }

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
desktop | chromeos | chrome | Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36
desktop | windows | ie | Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0) like Gecko
tv | linux | safari | Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/538.1 (KHTML, like Gecko) Version/6.0 TV Safari/538.1";

    #[test]
    fn classifies_common_browsers() {
        for line in BROWSERS.lines() {
            let [device, os, browser, ua] = line.splitn(4, " | ").collect::<Vec<_>>()[..] else {
                panic!("malformed line {line:?}");
            };
            let p = parse(ua);
            assert_eq!(
                (p.device, p.os, p.browser, p.is_bot),
                (device, os, browser, false),
                "{ua}"
            );
        }
    }

    #[test]
    fn flags_bots_and_empty_agents() {
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 Safari/537.36",
            "curl/8.5.0",
            "python-requests/2.32.3",
        ] {
            let parsed = parse(ua);
            assert!(parsed.is_bot, "{ua:?}");
            assert_eq!((parsed.device, parsed.browser), ("bot", "bot"), "{ua:?}");
        }
    }

    #[test]
    fn unknown_and_empty_agents_are_other_not_bots() {
        for ua in ["SomethingNew/1.0", "", "   "] {
            let parsed = parse(ua);
            assert_eq!(
                (parsed.device, parsed.os, parsed.browser, parsed.is_bot),
                ("other", "other", "other", false),
                "{ua:?}"
            );
        }
    }

    /// The classifier as plain substring tests over the lowercased user agent: what the
    /// one-pass search must agree with.
    fn by_substrings(user_agent: &str) -> UserAgent {
        let ua = user_agent.to_ascii_lowercase();
        let has = |needle: &str| ua.contains(needle);
        let os = if has("iphone") || has("ipad") || has("ipod") {
            "ios"
        } else if has("android") {
            "android"
        } else if has("windows") {
            "windows"
        } else if has("cros") {
            "chromeos"
        } else if has("mac os x") || has("macintosh") {
            "macos"
        } else if has("linux") || has("x11") {
            "linux"
        } else {
            "other"
        };
        if BOT_MARKERS.iter().any(|m| has(m)) {
            return UserAgent {
                device: "bot",
                os,
                browser: "bot",
                is_bot: true,
            };
        }
        let device = if has("smart-tv")
            || has("smarttv")
            || has("googletv")
            || has("appletv")
            || has("hbbtv")
            || has("tizen") && has("tv")
            || has("web0s")
            || has("roku")
        {
            "tv"
        } else if has("playstation") || has("xbox") || has("nintendo") {
            "console"
        } else if has("ipad") || has("tablet") || os == "android" && !has("mobile") {
            "tablet"
        } else if has("mobi") || has("iphone") || has("ipod") || os == "android" {
            "mobile"
        } else if matches!(os, "windows" | "macos" | "linux" | "chromeos") {
            "desktop"
        } else {
            "other"
        };
        let browser = if has("edg/") || has("edge/") || has("edga/") || has("edgios/") {
            "edge"
        } else if has("opr/") || has("opera") {
            "opera"
        } else if has("samsungbrowser/") {
            "samsung"
        } else if has("yabrowser/") {
            "yandex"
        } else if has("firefox/") || has("fxios/") {
            "firefox"
        } else if has("chrome/") || has("crios/") || has("chromium/") {
            "chrome"
        } else if has("msie ") || has("trident/") {
            "ie"
        } else if has("safari/") || has("applewebkit/") && has("mobile/") {
            "safari"
        } else {
            "other"
        };
        UserAgent {
            device,
            os,
            browser,
            is_bot: false,
        }
    }

    #[test]
    fn one_pass_search_agrees_with_substring_tests() {
        use rand::seq::IndexedRandom;
        use rand::Rng;
        let pieces: Vec<&str> = BOT_MARKERS
            .iter()
            .chain(FRAGMENTS)
            .copied()
            .chain([
                " ",
                "/",
                ";",
                "(",
                ")",
                "Mozilla/5.0",
                "é",
                "ТВ",
                "mob",
                "edg",
                "x1",
            ])
            .collect();
        let mut rng = rand::rng();
        for _ in 0..20_000 {
            let mut ua = String::new();
            for _ in 0..rng.random_range(0..8) {
                let piece = pieces.choose(&mut rng).copied().unwrap_or_default();
                // Random letter case, as browsers and bots write it.
                ua.extend(piece.chars().map(|c| {
                    if rng.random_bool(0.3) {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                }));
                // Sometimes a fragment broken by a stray character.
                if rng.random_bool(0.1) {
                    ua.push(*[' ', '-', 'X'].choose(&mut rng).unwrap_or(&' '));
                }
            }
            assert_eq!(parse(&ua), by_substrings(&ua), "{ua:?}");
        }
    }

    #[test]
    fn configured_markers_match_case_insensitively() {
        let markers = markers_from_list(" AcmeScanner , ,Fraud/");
        assert_eq!(markers, ["acmescanner", "fraud/"]);
        assert!(matches_any("Mozilla/5.0 ACMESCANNER 1.0", &markers));
        assert!(!matches_any("Mozilla/5.0", &markers));
        assert!(!matches_any("anything", &[]));
    }
}
