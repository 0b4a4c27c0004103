//! Double meta refresh in two hops: the tracking link answers a page that refreshes to a
//! second tracker URL (`/r/{token}`), and that page refreshes to the destination. Both
//! pages ask for no referrer, and the destination is reached from the second page, so it
//! sees neither the tracking link nor the page that sent the visitor.
//!
//! The token carries the destination itself, signed with the click hash keys and good
//! for `HOP_TTL_SECONDS`: any edge instance answers the second hop without shared state,
//! and nobody can make it send visitors anywhere a flow did not. The second hop records
//! no click: the click was counted once, at the tracking link.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use traffsure_core::ClickHashKeys;

use crate::click::html_escape;

/// How long a second-hop URL stays valid after the click.
pub const HOP_TTL_SECONDS: u64 = 600;

/// What the tag is computed over starts with this, so a hop tag never stands for
/// anything else signed with the same keys.
const LABEL: &[u8] = b"traffsure-refresh\0";
const TAG_BYTES: usize = 16;

fn signed_data(expires: u32, destination: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(LABEL.len() + 4 + destination.len());
    data.extend_from_slice(LABEL);
    data.extend_from_slice(&expires.to_be_bytes());
    data.extend_from_slice(destination.as_bytes());
    data
}

/// The path of the second hop to `destination`, valid until `now_s + HOP_TTL_SECONDS`:
/// `/r/` + base64url(key id, expiry, tag, destination).
pub fn hop_path(keys: &ClickHashKeys, destination: &str, now_s: u64) -> String {
    let expires = u32::try_from(now_s + HOP_TTL_SECONDS).unwrap_or(u32::MAX);
    let (key_id, tag) = keys.tag_with_active(&signed_data(expires, destination));
    let mut token = Vec::with_capacity(1 + 4 + TAG_BYTES + destination.len());
    token.push(key_id);
    token.extend_from_slice(&expires.to_be_bytes());
    token.extend_from_slice(&tag[..TAG_BYTES]);
    token.extend_from_slice(destination.as_bytes());
    format!("/r/{}", data_encoding::BASE64URL_NOPAD.encode(&token))
}

/// Why a second-hop token is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HopError {
    Malformed,
    BadSignature,
    Expired,
}

/// The destination a second-hop token names, when its signature holds and it has not
/// expired at `now_s`.
pub fn destination_of(keys: &ClickHashKeys, token: &str, now_s: u64) -> Result<String, HopError> {
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(token.as_bytes())
        .map_err(|_| HopError::Malformed)?;
    if bytes.len() <= 1 + 4 + TAG_BYTES {
        return Err(HopError::Malformed);
    }
    let key_id = bytes[0];
    let expires = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let tag = &bytes[5..5 + TAG_BYTES];
    let destination =
        std::str::from_utf8(&bytes[5 + TAG_BYTES..]).map_err(|_| HopError::Malformed)?;
    if !keys.check_tag(key_id, &signed_data(expires, destination), tag) {
        return Err(HopError::BadSignature);
    }
    if now_s > u64::from(expires) {
        return Err(HopError::Expired);
    }
    Ok(destination.to_string())
}

/// A page that refreshes to `url` at once, asking the browser to send no referrer.
pub fn refresh_page(url: &str) -> HttpResponse {
    let url = html_escape(url);
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .body(format!(
            "<!doctype html><html><head><meta name=\"referrer\" content=\"no-referrer\">\
             <meta http-equiv=\"refresh\" content=\"0;url={url}\"></head>\
             <body><a href=\"{url}\" rel=\"noreferrer\">Continue</a></body></html>"
        ))
}

/// The first hop of a double meta refresh to `destination`.
pub fn first_hop(keys: &ClickHashKeys, destination: &str) -> HttpResponse {
    refresh_page(&hop_path(keys, destination, now_s()))
}

/// `GET /r/{token}`: the second hop.
pub async fn second_hop(req: HttpRequest, keys: web::Data<ClickHashKeys>) -> HttpResponse {
    let token = req.path().strip_prefix("/r/").unwrap_or_default();
    match destination_of(&keys, token, now_s()) {
        Ok(destination) => refresh_page(&destination),
        Err(error) => {
            tracing::debug!(?error, "refused second refresh hop");
            let (mut response, message) = match error {
                HopError::Expired => (HttpResponse::Gone(), "this link has expired"),
                _ => (HttpResponse::NotFound(), "no such link"),
            };
            response
                .content_type("text/plain; charset=utf-8")
                .body(message)
        }
    }
}

fn now_s() -> u64 {
    u64::try_from(traffsure_core::now_ms() / 1000).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys(spec: &str) -> ClickHashKeys {
        ClickHashKeys::parse(spec, None).unwrap()
    }

    #[test]
    fn a_hop_names_its_destination_until_it_expires() {
        let k = keys("1:first-secret-of-sixteen,2:second-secret-of-sixteen");
        let dest = "https://offer.test/l?c=abc&s=x%20y";
        let path = hop_path(&k, dest, 1000);
        let token = path.strip_prefix("/r/").unwrap();
        assert_eq!(destination_of(&k, token, 1000).as_deref(), Ok(dest));
        assert_eq!(
            destination_of(&k, token, 1000 + HOP_TTL_SECONDS).as_deref(),
            Ok(dest)
        );
        assert_eq!(
            destination_of(&k, token, 1001 + HOP_TTL_SECONDS),
            Err(HopError::Expired)
        );
        // Another edge with the same keys, even after rotating to a new active key.
        let rotated =
            ClickHashKeys::parse("1:first-secret-of-sixteen,2:second-secret-of-sixteen", 1)
                .unwrap();
        assert_eq!(destination_of(&rotated, token, 1000).as_deref(), Ok(dest));
        // Other keys, a changed destination, garbage.
        let other = keys("2:another-secret-of-sixteen");
        assert_eq!(
            destination_of(&other, token, 1000),
            Err(HopError::BadSignature)
        );
        let mut bytes = data_encoding::BASE64URL_NOPAD
            .decode(token.as_bytes())
            .unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let forged = data_encoding::BASE64URL_NOPAD.encode(&bytes);
        assert_eq!(
            destination_of(&k, &forged, 1000),
            Err(HopError::BadSignature)
        );
        assert_eq!(destination_of(&k, "!!", 1000), Err(HopError::Malformed));
        assert_eq!(destination_of(&k, "AAAA", 1000), Err(HopError::Malformed));
    }
}
