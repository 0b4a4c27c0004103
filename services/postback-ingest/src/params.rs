//! Postback parameters: collected from the query string and a form or JSON body, then
//! read under the TraffSure names or the aliases trackers and networks send (their
//! dialects). Each meaning's list is in precedence order: the TraffSure name first, then
//! the aliases; the first name sent with a non-empty value wins. One name,
//! `transaction_id`, is the click in some dialects and the transaction in others: it is
//! read as the click only when no other click name is sent, and is then not read again
//! as the transaction.

use std::borrow::Cow;

/// Longest value kept whole in the postback log; longer ones are cut and flagged.
pub const MAX_LOGGED_VALUE: usize = 2048;
/// Most parameters read from one request.
pub const MAX_PARAMS: usize = 256;

pub use traffsure_core::postback_params::{
    CLICK, CLICK_OR_TRANSACTION, CURRENCY, DISABLE_POSTBACKS, FLOW, GOAL, MAX_REASON_BYTES, REASON,
    REVENUE, STATUS, UID, VISITOR,
};

/// The offer whose latest visit a visitor-based postback converts: FunnelFlux's page id
/// (docs/visitors.md#funnelflux-page-scoped-conversions). Read only beside a visitor ID,
/// so a network's own `offer_id` never narrows a postback.
pub const OFFER: &[&str] = &["p"];

/// Parameter whose value the log masks: it is a flow's shared secret.
pub const SECRET: &str = "token";
/// Name under which the log shows a visitor ID read from the cookie.
pub const VISITOR_COOKIE_LOG_NAME: &str = "cookie:vid";

/// Every parameter of one request, in the order sent, names as sent.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Params {
    pub pairs: Vec<(String, String)>,
    /// The visitor ID from the visitor cookie, for the browser endpoints.
    pub visitor_cookie: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    Json(String),
}

impl Params {
    /// Collects the query string and, by content type, a form or JSON body.
    pub fn collect(
        query: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Self, (Self, BodyError)> {
        let mut params = Self::default();
        params.extend_form(query.as_bytes());
        if body.is_empty() {
            return Ok(params);
        }
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if mime == "application/json" || mime.ends_with("+json") {
            match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(serde_json::Value::Object(fields)) => {
                    for (name, value) in fields {
                        let value = match value {
                            serde_json::Value::String(s) => s,
                            serde_json::Value::Null => String::new(),
                            other => other.to_string(),
                        };
                        params.push(name, value);
                    }
                }
                Ok(_) => {
                    return Err((
                        params,
                        BodyError::Json("JSON body must be an object".into()),
                    ))
                }
                Err(e) => {
                    return Err((
                        params,
                        BodyError::Json(format!("JSON body is malformed: {e}")),
                    ))
                }
            }
        } else if mime == "application/x-www-form-urlencoded" || mime.is_empty() {
            params.extend_form(body);
        } else {
            params.push("_body".into(), String::from_utf8_lossy(body).into_owned());
        }
        Ok(params)
    }

    fn push(&mut self, name: String, value: String) {
        if self.pairs.len() < MAX_PARAMS {
            self.pairs.push((name, value));
        }
    }

    fn extend_form(&mut self, bytes: &[u8]) {
        for (name, value) in form_urlencoded_pairs(bytes) {
            self.push(name, value);
        }
    }

    /// The first non-empty value under any of `names`, matched case-insensitively.
    pub fn get(&self, names: &[&str]) -> Option<&str> {
        self.find(names).map(|(_, value)| value)
    }

    /// As `get`, with the name the value was sent under.
    pub fn find(&self, names: &[&str]) -> Option<(&str, &str)> {
        names.iter().find_map(|wanted| {
            self.pairs
                .iter()
                .find(|(name, value)| name.eq_ignore_ascii_case(wanted) && !value.trim().is_empty())
                .map(|(name, value)| (name.as_str(), value.trim()))
        })
    }

    /// The click hash and the name it was sent under: a `CLICK` name, else
    /// `transaction_id` when no visitor ID is sent either (a visitor postback keeps it as
    /// its transaction).
    pub fn click(&self) -> Option<(&str, &str)> {
        self.find(CLICK).or_else(|| {
            self.visitor()
                .is_none()
                .then(|| self.find(&[CLICK_OR_TRANSACTION]))
                .flatten()
        })
    }

    /// The transaction ID and its name, skipping the name the click was read under.
    pub fn uid(&self) -> Option<(&str, &str)> {
        let click_name = self.click().map(|(name, _)| name);
        let names: Vec<&str> = UID
            .iter()
            .copied()
            .filter(|name| !click_name.is_some_and(|taken| taken.eq_ignore_ascii_case(name)))
            .collect();
        self.find(&names)
    }

    /// The visitor ID: the `vid` parameter, else the visitor cookie.
    pub fn visitor(&self) -> Option<&str> {
        self.get(VISITOR).or_else(|| {
            self.visitor_cookie
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
        })
    }

    /// The parameters as the log keeps them: values cut to `MAX_LOGGED_VALUE` bytes (and
    /// flagged), the token masked, and the visitor cookie when one was read.
    pub fn for_log(&self) -> impl Iterator<Item = (&str, Cow<'_, str>, bool)> {
        let cookie = self
            .visitor_cookie
            .as_deref()
            .map(|vid| (VISITOR_COOKIE_LOG_NAME, vid));
        self.pairs
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .chain(cookie)
            .map(|(name, value)| {
                if name.eq_ignore_ascii_case(SECRET) && !value.is_empty() {
                    (name, Cow::Borrowed("***"), false)
                } else if value.len() <= MAX_LOGGED_VALUE {
                    (name, Cow::Borrowed(value), false)
                } else {
                    let mut cut = MAX_LOGGED_VALUE;
                    while !value.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    (name, Cow::Borrowed(&value[..cut]), true)
                }
            })
    }
}

/// `a=b&c=d` with `+` as space; malformed escapes and invalid UTF-8 are kept lossily.
fn form_urlencoded_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    bytes
        .split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[..0]),
            };
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(raw: &[u8]) -> String {
    let plus: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_encoding::percent_decode(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_aliases_case_insensitively() {
        let p =
            Params::collect("ClickID=abc&payout=1.5&TX=t1&et=sale&status=hold", "", b"").unwrap();
        assert_eq!(p.get(CLICK), Some("abc"));
        assert_eq!(p.get(REVENUE), Some("1.5"));
        assert_eq!(p.get(UID), Some("t1"));
        assert_eq!(p.get(GOAL), Some("sale"));
        assert_eq!(p.get(STATUS), Some("hold"));
        assert_eq!(p.get(CURRENCY), None);
        assert_eq!(p.find(REVENUE), Some(("payout", "1.5")));
        assert_eq!(p.find(UID), Some(("TX", "t1")));
    }

    #[test]
    fn reads_every_vendor_dialect() {
        let binom = Params::collect(
            "cnv_id=b1&payout=2&cnv_status=Hold&cnv_currency=eur",
            "",
            b"",
        )
        .unwrap();
        assert_eq!(binom.click(), Some(("cnv_id", "b1")));
        assert_eq!(binom.get(STATUS), Some("Hold"));
        assert_eq!(binom.get(CURRENCY), Some("eur"));
        let redtrack =
            Params::collect("clickid=r1&sum=3&type=Deposit&rdtk_event_id=e9", "", b"").unwrap();
        assert_eq!(redtrack.get(GOAL), Some("Deposit"));
        assert_eq!(redtrack.uid(), Some(("rdtk_event_id", "e9")));
        let cake = Params::collect(
            "click_id=k1&payout=5.00&revenue=12.00&order_id=O-1&unique_id=T-1",
            "",
            b"",
        )
        .unwrap();
        assert_eq!(cake.find(REVENUE), Some(("revenue", "12.00")));
        assert_eq!(cake.uid(), Some(("unique_id", "T-1")));
    }

    #[test]
    fn transaction_id_is_the_click_only_without_another_click_name() {
        // TUNE and Everflow: their click travels in transaction_id.
        let tune = Params::collect("offer_id=26&transaction_id=h1", "", b"").unwrap();
        assert_eq!(tune.click(), Some(("transaction_id", "h1")));
        assert_eq!(tune.uid(), None);
        let everflow =
            Params::collect("nid=7&Transaction_ID=h2&amount=9&order_id=O-2", "", b"").unwrap();
        assert_eq!(everflow.click(), Some(("Transaction_ID", "h2")));
        assert_eq!(everflow.uid(), Some(("order_id", "O-2")));
        // Another click name present: transaction_id is the advertiser's transaction.
        let partner = Params::collect("subid=h3&transaction_id=t3", "", b"").unwrap();
        assert_eq!(partner.click(), Some(("subid", "h3")));
        assert_eq!(partner.uid(), Some(("transaction_id", "t3")));
        // A visitor postback keeps it as its transaction.
        let visitor = Params::collect("vid=v1&flow=2&transaction_id=t4", "", b"").unwrap();
        assert_eq!(visitor.click(), None);
        assert_eq!(visitor.uid(), Some(("transaction_id", "t4")));
        let mut cookie = Params::collect("flow=2&transaction_id=t5", "", b"").unwrap();
        cookie.visitor_cookie = Some("v2".into());
        assert_eq!(
            (cookie.click(), cookie.uid()),
            (None, Some(("transaction_id", "t5")))
        );
    }

    #[test]
    fn reads_every_reason_name_with_reason_first() {
        for name in REASON {
            let p = Params::collect(&format!("click=c&{name}=Fraud+traffic"), "", b"").unwrap();
            assert_eq!(p.find(REASON), Some((*name, "Fraud traffic")), "{name}");
        }
        let affise =
            Params::collect("clickid=a&status=3&comment=dup&reason=fraud", "", b"").unwrap();
        assert_eq!(affise.find(REASON), Some(("reason", "fraud")));
        let cased = Params::collect("Rejection_Reason=%20bot%20&notice=", "", b"").unwrap();
        assert_eq!(cased.find(REASON), Some(("Rejection_Reason", "bot")));
        assert_eq!(
            Params::collect("click=c&notes=x", "", b"")
                .unwrap()
                .find(REASON),
            None
        );
    }

    #[test]
    fn canonical_name_wins_over_alias_and_empty_values_are_skipped() {
        let p = Params::collect("cid=alias&click=&click=real", "", b"").unwrap();
        assert_eq!(p.get(CLICK), Some("real"));
    }

    #[test]
    fn reads_form_and_json_bodies() {
        let form = Params::collect(
            "goal=lead",
            "application/x-www-form-urlencoded",
            b"hit=h1&rev=2",
        )
        .unwrap();
        assert_eq!(
            (form.get(CLICK), form.get(REVENUE), form.get(GOAL)),
            (Some("h1"), Some("2"), Some("lead"))
        );
        let json = Params::collect(
            "",
            "application/json; charset=utf-8",
            br#"{"click":"c1","revenue":3.25,"extra":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(json.get(REVENUE), Some("3.25"));
        assert!(json.pairs.contains(&("extra".into(), r#"{"a":1}"#.into())));
        let (partial, error) =
            Params::collect("click=c2", "application/json", b"{nope").unwrap_err();
        assert_eq!(partial.get(CLICK), Some("c2"));
        assert!(matches!(error, BodyError::Json(_)));
    }

    #[test]
    fn survives_broken_encoding_and_cuts_long_values() {
        let p = Params::collect("click=%ZZ%FF%&a&=b&x=%E2%82", "", b"").unwrap();
        assert_eq!(p.get(CLICK), Some("%ZZ\u{fffd}%"));
        let long = format!("v={}", "é".repeat(MAX_LOGGED_VALUE));
        let p = Params::collect(&long, "", b"").unwrap();
        let (_, value, truncated) = p.for_log().next().unwrap();
        assert!(truncated && value.len() <= MAX_LOGGED_VALUE);
    }

    #[test]
    fn duplicates_are_all_logged_and_the_first_value_is_read() {
        let p = Params::collect("GOAL=lead&goal=sale&Click=c1&CLICK=c2", "", b"").unwrap();
        assert_eq!(p.get(GOAL), Some("lead"));
        assert_eq!(p.get(CLICK), Some("c1"));
        let logged: Vec<(String, String)> = p
            .for_log()
            .map(|(n, v, _)| (n.to_string(), v.into_owned()))
            .collect();
        assert_eq!(logged.len(), 4);
        assert_eq!(logged[1], ("goal".to_string(), "sale".to_string()));
        assert_eq!(logged[3], ("CLICK".to_string(), "c2".to_string()));
    }

    #[test]
    fn log_masks_the_token_and_shows_the_visitor_cookie() {
        let mut p = Params::collect("click=c&Token=s3cret&extra=%2Fx", "", b"").unwrap();
        p.visitor_cookie = Some("beef0000000000000000000000000000".into());
        assert_eq!(p.visitor(), Some("beef0000000000000000000000000000"));
        let logged: Vec<(String, String)> = p
            .for_log()
            .map(|(n, v, _)| (n.to_string(), v.into_owned()))
            .collect();
        assert_eq!(
            logged,
            [
                ("click", "c"),
                ("Token", "***"),
                ("extra", "/x"),
                (VISITOR_COOKIE_LOG_NAME, "beef0000000000000000000000000000"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        let p = Params::collect("vid=abc", "", b"").unwrap();
        assert_eq!(p.visitor(), Some("abc"));
    }

    #[test]
    fn keeps_every_param_of_a_huge_request_up_to_the_cap() {
        let query: Vec<String> = (0..MAX_PARAMS + 10).map(|i| format!("p{i}={i}")).collect();
        let p = Params::collect(&query.join("&"), "", b"").unwrap();
        assert_eq!(p.pairs.len(), MAX_PARAMS);
        let huge = format!("click=c&blob={}", "x".repeat(100_000));
        let p = Params::collect(&huge, "", b"").unwrap();
        let (name, value, truncated) = p.for_log().nth(1).unwrap();
        assert_eq!(
            (name, value.len(), truncated),
            ("blob", MAX_LOGGED_VALUE, true)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed: u64 = 42;
        for _ in 0..2_000 {
            let bytes: Vec<u8> = (0..(seed % 40))
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    [b'&', b'=', b'%', b'+', b'a', 0xFF, 0xE2, b'{', b'"', b'1']
                        [(seed >> 40) as usize % 10]
                })
                .collect();
            let query = String::from_utf8_lossy(&bytes);
            let _ = Params::collect(&query, "application/json", &bytes);
            let _ = Params::collect(&query, "application/x-www-form-urlencoded", &bytes);
        }
    }
}
