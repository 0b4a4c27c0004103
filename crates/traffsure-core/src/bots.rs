//! Whether a user agent alone names a bot, and why: a headless browser, automation
//! driver or HTTP library (`headless`), or a crawler known to crawler-user-agents' pattern
//! list or to uap-core as a `Spider` device (`crawler`).
//!
//! Patterns match as the list publishes them (regular expressions, letter case as
//! written), never a bare fragment such as `bot` inside a word: a Cubot phone is a phone.
//! Addresses, configured lists, empty user agents, data centres and click rates are the
//! edge's to judge; this module only reads the user agent.

use traffsure_events::BotReason;

/// Headless browsers, automation drivers and HTTP libraries, as they sign their user
/// agents (regular expressions, case-insensitive, each starting at a word boundary).
/// Java's HTTP client sends `Java/<version>` alone, unlike the `Java/ASVM` or
/// `SEMC-Java/2.0` of feature phones.
pub const HEADLESS_MARKERS: &[&str] = &[
    "HeadlessChrome",
    "PhantomJS",
    "SlimerJS",
    "HtmlUnit",
    "Selenium",
    "webdriver",
    "Puppeteer",
    "Playwright",
    "Nightmare",
    "curl/",
    "Wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "Go-http-client",
    "okhttp",
    r"^Java/\d",
    "Apache-HttpClient",
    "libwww-perl",
    "node-fetch",
    "axios/",
    "undici",
    "Scrapy",
    "PostmanRuntime",
    "HTTPie",
    "Guzzle",
];

/// One entry of crawler-user-agents.json (other fields are ignored).
#[derive(serde::Deserialize)]
struct CrawlerEntry {
    pattern: String,
}

/// Why the crawler list could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CrawlerListError {
    #[error("not a crawler-user-agents list: {0}")]
    Format(#[from] serde_json::Error),
    #[error("crawler patterns do not compile: {0}")]
    Compile(#[from] regex::Error),
}

/// The compiled bot patterns.
#[derive(Debug, Clone)]
pub struct BotPatterns {
    headless: regex::Regex,
    crawlers: regex::Regex,
    /// Crawler patterns dropped because this regex engine cannot compile them.
    skipped: Vec<String>,
}

impl BotPatterns {
    /// Compiles crawler-user-agents.json's patterns with the headless markers.
    pub fn from_crawler_list(json: &str) -> Result<Self, CrawlerListError> {
        let entries: Vec<CrawlerEntry> = serde_json::from_str(json)?;
        // Patterns written for JavaScript: the few this engine rejects (look-arounds) are
        // left out and reported rather than failing the whole list.
        let (valid, skipped): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .map(|e| e.pattern)
            .partition(|p| regex::Regex::new(p).is_ok());
        let crawlers = regex::Regex::new(
            &valid
                .iter()
                .map(|p| format!("(?:{p})"))
                .collect::<Vec<_>>()
                .join("|"),
        )?;
        let headless = regex::Regex::new(&format!(r"(?i)\b(?:{})", HEADLESS_MARKERS.join("|")))?;
        Ok(Self {
            headless,
            crawlers,
            skipped,
        })
    }

    /// Crawler patterns left out because they do not compile here.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Why `user_agent` is a bot, from the user agent alone; `device_family` and
    /// `device_brand` are what uap-core makes of its device (`Spider` for the crawlers it
    /// knows). A device uap-core names by brand is a person's unless uap-core calls it a
    /// spider: crawler patterns such as `WhatsApp` or `Butterfly` also occur in apps and
    /// phone models.
    pub fn reason(
        &self,
        user_agent: &str,
        device_family: &str,
        device_brand: &str,
    ) -> Option<BotReason> {
        if self.headless.is_match(user_agent) {
            Some(BotReason::Headless)
        } else if device_family == "Spider"
            || device_brand.is_empty() && self.crawlers.is_match(user_agent)
        {
            Some(BotReason::Crawler)
        } else {
            None
        }
    }
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

    const LIST: &str = r#"[
        {"pattern": "Googlebot\\/", "url": "http://www.google.com/bot.html"},
        {"pattern": "bingbot"},
        {"pattern": "^curl"},
        {"pattern": "(?<!Cu)bot-only-in-js"}
    ]"#;

    #[test]
    fn names_the_reason_from_the_user_agent() {
        let bots = BotPatterns::from_crawler_list(LIST).unwrap_or_else(|e| panic!("{e}"));
        let cases = [
            ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Other", Some(BotReason::Crawler)),
            ("Mozilla/5.0 (compatible; bingbot/2.0)", "Other", Some(BotReason::Crawler)),
            ("SomeSpider/1.0", "Spider", Some(BotReason::Crawler)),
            ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 Safari/537.36", "Other", Some(BotReason::Headless)),
            ("curl/8.5.0", "Other", Some(BotReason::Headless)),
            ("python-requests/2.32.3", "Other", Some(BotReason::Headless)),
            ("Mozilla/5.0 (Linux; Android 9; CUBOT X20 PRO) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/74.0.3729.136 Mobile Safari/537.36", "Cubot X20 PRO", None),
            ("Mozilla/5.0 (Linux; Android 10; Cubot_Note_20) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/90.0 Mobile Safari/537.36", "Cubot Note_20", None),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36", "Other", None),
            ("", "Other", None),
        ];
        for (ua, device, reason) in cases {
            let brand = if device.starts_with("Cubot") {
                "Cubot"
            } else {
                ""
            };
            assert_eq!(bots.reason(ua, device, brand), reason, "{ua}");
        }
        // A phone uap-core names, with a crawler pattern in an app's user agent.
        assert_eq!(
            bots.reason("bingbot-in-an-app Android/4.2.1", "Asus Nexus 7", "Asus"),
            None
        );
        assert_eq!(
            bots.reason("Java/ASVM/1.1 Profile/MIDP-2.1", "LG-T500", "LG"),
            None
        );
        assert_eq!(
            bots.reason("Java/17.0.2", "Other", ""),
            Some(BotReason::Headless)
        );
        assert_eq!(bots.skipped(), ["(?<!Cu)bot-only-in-js"]);
    }

    #[test]
    fn a_list_that_is_not_one_is_an_error() {
        assert!(BotPatterns::from_crawler_list("{}").is_err());
        assert!(BotPatterns::from_crawler_list("not json").is_err());
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
