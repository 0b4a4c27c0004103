//! Per-flow postback security: an IP allow-list, a shared token, and an HMAC-SHA256
//! signature with a timestamp and a replay window. Each is off until the flow sets it;
//! this module decides pass or fail, and `answer.rs` says how a failure is answered.
//!
//! The signature covers every parameter of the request except `signature` itself, in a
//! canonical form an advertiser can build with any HMAC library:
//!
//! 1. take every parameter (query and body) as decoded, names as sent, except `signature`;
//! 2. percent-encode each name and value, keeping only `A-Z a-z 0-9 - . _ ~` as they are
//!    (upper-case hex, so a space is `%20`);
//! 3. sort the `name=value` pairs by name, then by value, and join them with `&`;
//! 4. `signature` is the lowercase hex HMAC-SHA256 of that text under the flow's secret.
//!
//! `timestamp` (Unix seconds) is required and signed; it must lie within the flow's
//! `max_age_seconds` (300 when 0) of the server's clock, either way, so a captured
//! postback cannot be replayed later.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;
use traffsure_core::cidr::CidrList;
use traffsure_events::PostbackSecurity;

use crate::params::Params;

pub const TOKEN: &str = "token";
pub const SIGNATURE: &str = "signature";
pub const TIMESTAMP: &str = "timestamp";
/// Replay window when a flow sets none.
pub const DEFAULT_MAX_AGE_SECONDS: u32 = 300;

/// Everything except the RFC 3986 unreserved characters is escaped.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a postback fails its flow's security.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// The client address, or `unknown`, is outside the flow's allow-list.
    #[error("postbacks from {0} are not allowed for this flow")]
    IpNotAllowed(String),
    #[error("this flow requires the token parameter")]
    MissingToken,
    #[error("token does not match")]
    InvalidToken,
    #[error("this flow requires signed postbacks: signature and timestamp parameters")]
    MissingSignature,
    #[error("signed postbacks need the timestamp parameter (Unix seconds)")]
    MissingTimestamp,
    #[error("timestamp must be Unix seconds")]
    InvalidTimestamp,
    #[error("signature must be hex HMAC-SHA256")]
    MalformedSignature,
    #[error("signature does not match the parameters")]
    SignatureMismatch,
    #[error("timestamp is {age} s from now, outside the {max_age} s window")]
    Expired { age: i64, max_age: u32 },
}

/// Checks a postback against its flow's security settings.
pub fn check(
    security: &PostbackSecurity,
    params: &Params,
    ip: Option<IpAddr>,
    now_s: i64,
) -> Result<(), SecurityError> {
    if !security.allowed_ips.is_empty() {
        // Stored flows hold validated blocks; one that fails to parse allows nothing.
        let allowed = CidrList::parse(&security.allowed_ips).unwrap_or_default();
        if !ip.is_some_and(|ip| allowed.contains(ip)) {
            let shown = ip
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "unknown".into());
            return Err(SecurityError::IpNotAllowed(shown));
        }
    }
    if !security.token.is_empty() {
        match exact(params, TOKEN) {
            None => return Err(SecurityError::MissingToken),
            Some(token) if !constant_time_eq(token.as_bytes(), security.token.as_bytes()) => {
                return Err(SecurityError::InvalidToken)
            }
            Some(_) => {}
        }
    }
    if !security.hmac_secret.is_empty() {
        check_signature(security, params, now_s)?;
    }
    Ok(())
}

fn check_signature(
    security: &PostbackSecurity,
    params: &Params,
    now_s: i64,
) -> Result<(), SecurityError> {
    let signature = exact(params, SIGNATURE).ok_or(SecurityError::MissingSignature)?;
    let timestamp = exact(params, TIMESTAMP).ok_or(SecurityError::MissingTimestamp)?;
    let timestamp = timestamp
        .parse::<i64>()
        .map_err(|_| SecurityError::InvalidTimestamp)?;
    let expected = data_encoding::HEXLOWER_PERMISSIVE
        .decode(signature.as_bytes())
        .map_err(|_| SecurityError::MalformedSignature)?;
    // HMAC takes keys of any length, so this never refuses a secret.
    let mut mac = Hmac::<Sha256>::new_from_slice(security.hmac_secret.as_bytes())
        .map_err(|_| SecurityError::SignatureMismatch)?;
    mac.update(canonical(params).as_bytes());
    if mac.verify_slice(&expected).is_err() {
        return Err(SecurityError::SignatureMismatch);
    }
    // Checked after the signature, so an expired answer is only given to a real sender.
    let max_age = match security.max_age_seconds {
        0 => DEFAULT_MAX_AGE_SECONDS,
        n => n,
    };
    let age = now_s.saturating_sub(timestamp);
    if age.unsigned_abs() > u64::from(max_age) {
        return Err(SecurityError::Expired { age, max_age });
    }
    Ok(())
}

/// The first value of a parameter under exactly this (case-insensitive) name.
fn exact<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params.get(&[name])
}

/// The text a signature covers; see the module documentation.
pub fn canonical(params: &Params) -> String {
    let mut pairs: Vec<(String, String)> = params
        .pairs
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case(SIGNATURE))
        .map(|(name, value)| {
            (
                utf8_percent_encode(name, ESCAPED).to_string(),
                utf8_percent_encode(value, ESCAPED).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The signature of `params` under `secret`, as a sender computes it.
#[cfg(test)]
pub fn sign(secret: &str, params: &Params) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(canonical(params).as_bytes());
    data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params(query: &str) -> Params {
        Params::collect(query, "", b"").unwrap()
    }

    fn security(token: &str, secret: &str, ips: &[&str]) -> PostbackSecurity {
        PostbackSecurity {
            token: token.into(),
            hmac_secret: secret.into(),
            max_age_seconds: 0,
            allowed_ips: ips.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn canonical_form_is_sorted_escaped_and_skips_the_signature() {
        let p = params("status=hold&click=abc&signature=ff&a+b=x%26y=z&timestamp=17&click=aaa");
        assert_eq!(
            canonical(&p),
            "a%20b=x%26y%3Dz&click=aaa&click=abc&status=hold&timestamp=17"
        );
    }

    #[test]
    fn known_vector() {
        // printf '%s' 'click=abc&revenue=1.5&timestamp=1700000000' \
        //   | openssl dgst -sha256 -hmac 'postback-secret-0001'
        let p = params("click=abc&revenue=1.5&timestamp=1700000000");
        assert_eq!(
            sign("postback-secret-0001", &p),
            "24e69f98169f11bd8b2a90808c3f65556d1b23b7b44f19f0013d37d8bdfa5f90"
        );
    }

    #[test]
    fn off_by_default() {
        assert!(check(&PostbackSecurity::default(), &params("click=a"), None, 0).is_ok());
    }

    #[test]
    fn token_must_match() {
        let s = security("s3cret", "", &[]);
        assert!(check(&s, &params("click=a&token=s3cret"), None, 0).is_ok());
        assert!(check(&s, &params("click=a&TOKEN=s3cret"), None, 0).is_ok());
        assert_eq!(
            check(&s, &params("click=a"), None, 0),
            Err(SecurityError::MissingToken)
        );
        assert_eq!(
            check(&s, &params("click=a&token=s3creT"), None, 0),
            Err(SecurityError::InvalidToken)
        );
    }

    #[test]
    fn signature_good_bad_and_expired() {
        let secret = "postback-secret-0001";
        let s = security("", secret, &[]);
        let now = 1_700_000_000;
        let signed = |query: &str| {
            let sig = sign(secret, &params(query));
            params(&format!("{query}&signature={sig}"))
        };
        let good = signed(&format!("click=a&revenue=2&timestamp={now}"));
        assert!(check(&s, &good, None, now + 299).is_ok());
        assert!(check(&s, &good, None, now - 299).is_ok());
        let expired = check(&s, &good, None, now + 301);
        assert_eq!(
            expired,
            Err(SecurityError::Expired {
                age: 301,
                max_age: 300
            })
        );
        assert_eq!(
            expired.unwrap_err().to_string(),
            "timestamp is 301 s from now, outside the 300 s window"
        );
        let mut tampered = good.clone();
        tampered.pairs[1].1 = "200".into();
        let refused = |params: &Params| check(&s, params, None, now).unwrap_err();
        assert_eq!(refused(&tampered), SecurityError::SignatureMismatch);
        assert_eq!(
            refused(&params("click=a&timestamp=1")),
            SecurityError::MissingSignature
        );
        assert_eq!(
            refused(&params("click=a&signature=00")),
            SecurityError::MissingTimestamp
        );
        assert_eq!(
            refused(&params("click=a&timestamp=x&signature=00")),
            SecurityError::InvalidTimestamp
        );
        assert_eq!(
            refused(&params("click=a&timestamp=1&signature=zz")),
            SecurityError::MalformedSignature
        );
        let wide = PostbackSecurity {
            max_age_seconds: 3600,
            ..s
        };
        assert!(check(&wide, &good, None, now + 3000).is_ok());
    }

    #[test]
    fn ip_allow_list() {
        let s = security("", "", &["203.0.113.0/24", "2001:db8::/32"]);
        let ok = |ip: &str| check(&s, &params("click=a"), Some(ip.parse().unwrap()), 0);
        assert!(ok("203.0.113.9").is_ok());
        assert!(ok("2001:db8::5").is_ok());
        assert!(ok("::ffff:203.0.113.9").is_ok());
        assert_eq!(
            ok("198.51.100.1"),
            Err(SecurityError::IpNotAllowed("198.51.100.1".into()))
        );
        assert_eq!(
            check(&s, &params("click=a"), None, 0),
            Err(SecurityError::IpNotAllowed("unknown".into()))
        );
    }
}
