//! Who the client of an edge is: the TCP peer, or, when the peer is a trusted proxy, the
//! address the configured header names. Both edges (click-ingest and postback-ingest)
//! ask this module and nothing else, so one forwarded header gives one answer.
//!
//! A forwarded list (`X-Forwarded-For: client, proxy1, proxy2`) is walked from the right:
//! each trusted hop vouches for the entry on its left, so the client is the right-most
//! entry that is not itself a trusted proxy. Entries further left are whatever the client
//! claimed and are never read. An entry that is not an address stops the walk at the
//! last address a trusted hop vouched for; when every entry is trusted, the left-most
//! one is the client (a host inside the trusted blocks). This is nginx's
//! `real_ip_recursive` rule.
//!
//! Single-address headers (`X-Real-IP`, `CF-Connecting-IP`, `True-Client-IP`) are a
//! list of one; `Forwarded` (RFC 7239) is read through its `for=` parameters. Addresses
//! may carry a port (`1.2.3.4:5678`, `[2001:db8::1]:443`).
//!
//! Whether the client came over HTTPS follows the same trust rule: only a trusted proxy's
//! `X-Forwarded-Proto` or `Forwarded: proto=` is believed.
//!
//! Header lookup is left to the edges; this module takes header values as text.

use std::net::IpAddr;

use crate::cidr::{CidrError, CidrList};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIpError {
    #[error("header: {0:?} is not a header name")]
    Header(String),
    #[error("trusted_proxies: {0}")]
    TrustedProxies(#[from] CidrError),
}

/// The client-address rule of an edge: which header names the client, and whose word
/// for it is believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpResolver {
    /// Lowercase header name, e.g. `x-forwarded-for`.
    header: String,
    trusted_proxies: CidrList,
}

impl ClientIpResolver {
    /// `header` is a header name (any case, surrounding blanks ignored);
    /// `trusted_proxies` a comma-separated list of addresses or CIDR blocks, empty to
    /// trust none.
    pub fn new(header: &str, trusted_proxies: &str) -> Result<Self, ClientIpError> {
        let header = header.trim().to_ascii_lowercase();
        if !is_token(&header) {
            return Err(ClientIpError::Header(header));
        }
        let blocks: Vec<&str> = trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Self {
            header,
            trusted_proxies: CidrList::parse(&blocks)?,
        })
    }

    /// The lowercase name of the header that names the client.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// Whether `peer` is a trusted proxy.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|peer| self.trusted_proxies.contains(peer))
    }

    /// The client's address, given the TCP peer and the value of `header()`, if sent.
    pub fn client_ip(&self, peer: Option<IpAddr>, header_value: Option<&str>) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(Some(peer)) {
            return Some(peer);
        }
        let Some(value) = header_value else {
            return Some(peer);
        };
        let mut client = peer;
        for entry in value.rsplit(',') {
            let address = if self.header == "forwarded" {
                forwarded_param(entry, "for")
            } else {
                Some(entry.trim())
            };
            let Some(ip) = address.and_then(parse_ip) else {
                break;
            };
            client = ip;
            if !self.trusted_proxies.contains(ip) {
                break;
            }
        }
        Some(client)
    }

    /// Whether the client reached the trusted proxy over HTTPS: the last entry of
    /// `X-Forwarded-Proto`, or the `proto=` of the last element of `Forwarded`, says
    /// `https`. A peer that is not a trusted proxy cannot say so.
    pub fn forwarded_https(
        &self,
        peer: Option<IpAddr>,
        x_forwarded_proto: Option<&str>,
        forwarded: Option<&str>,
    ) -> bool {
        if !self.trusts(peer) {
            return false;
        }
        let is_https = |proto: &str| proto.trim().eq_ignore_ascii_case("https");
        x_forwarded_proto.is_some_and(|v| v.split([',', ';']).next_back().is_some_and(is_https))
            || forwarded.is_some_and(|v| {
                v.rsplit(',')
                    .next()
                    .and_then(|last| forwarded_param(last, "proto"))
                    .is_some_and(is_https)
            })
    }
}

/// The value of parameter `name` in one `Forwarded` element (`for=1.2.3.4;proto=https`),
/// quotes removed.
fn forwarded_param<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or
/// `[2001:db8::1]:443`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    text.rsplit_once(':').and_then(|(ip, _)| ip.parse().ok())
}

/// An HTTP header name: a non-empty RFC 9110 token.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    fn xff(trusted: &str) -> ClientIpResolver {
        ClientIpResolver::new("X-Forwarded-For", trusted).unwrap()
    }

    #[test]
    fn walks_the_list_from_the_right_past_trusted_proxies() {
        let r = xff("127.0.0.0/8, 10.0.0.0/8");
        let of = |value: &str| r.client_ip(ip("127.0.0.1"), Some(value));
        assert_eq!(of("6.6.6.6, 8.8.8.8, 10.1.1.1"), ip("8.8.8.8"));
        assert_eq!(of("198.51.100.7,203.0.113.5"), ip("203.0.113.5"));
        assert_eq!(of("2001:4860::8888"), ip("2001:4860::8888"));
        assert_eq!(of("[2001:db8::1]:443"), ip("2001:db8::1"));
        assert_eq!(of("1.2.3.4:5678, 10.0.0.9"), ip("1.2.3.4"));
        // Every hop trusted: the left-most is a client inside the trusted blocks.
        assert_eq!(of("10.2.2.2, 10.1.1.1"), ip("10.2.2.2"));
        // Garbage stops the walk at the last address a trusted hop vouched for.
        assert_eq!(of("8.8.8.8, junk, 10.9.9.9"), ip("10.9.9.9"));
        assert_eq!(of("nonsense"), ip("127.0.0.1"));
        assert_eq!(of(""), ip("127.0.0.1"));
        assert_eq!(r.client_ip(ip("127.0.0.1"), None), ip("127.0.0.1"));
        assert_eq!(r.client_ip(None, Some("8.8.8.8")), None);
    }

    #[test]
    fn only_a_trusted_peer_chooses_the_address() {
        let r = xff("10.0.0.0/8");
        assert_eq!(r.client_ip(ip("9.9.9.9"), Some("8.8.8.8")), ip("9.9.9.9"));
        let untrusting = xff("");
        assert_eq!(
            untrusting.client_ip(ip("127.0.0.1"), Some("8.8.8.8")),
            ip("127.0.0.1")
        );
        // An IPv4 peer seen as IPv4-mapped IPv6 is still the trusted proxy.
        assert_eq!(
            r.client_ip(ip("::ffff:10.0.0.2"), Some("8.8.8.8")),
            ip("8.8.8.8")
        );
    }

    #[test]
    fn single_address_headers_and_forwarded() {
        let real = ClientIpResolver::new(" X-Real-IP ", "10.0.0.0/8").unwrap();
        assert_eq!(real.header(), "x-real-ip");
        assert_eq!(
            real.client_ip(ip("10.0.0.2"), Some("203.0.113.5")),
            ip("203.0.113.5")
        );
        let forwarded = ClientIpResolver::new("Forwarded", "10.0.0.0/8").unwrap();
        let of = |value: &str| forwarded.client_ip(ip("10.0.0.2"), Some(value));
        assert_eq!(
            of("for=6.6.6.6, for=203.0.113.5;proto=https, for=10.1.1.1"),
            ip("203.0.113.5")
        );
        assert_eq!(of("For=\"[2001:db8::7]:4711\""), ip("2001:db8::7"));
        assert_eq!(of("for=_hidden, for=10.1.1.1"), ip("10.1.1.1"));
        assert_eq!(of("proto=https"), ip("10.0.0.2"));
    }

    #[test]
    fn https_is_taken_only_from_trusted_proxies() {
        let r = xff("10.0.0.0/8");
        let proxy = ip("10.1.2.3");
        let https = |peer, proto: Option<&str>, forwarded: Option<&str>| {
            r.forwarded_https(peer, proto, forwarded)
        };
        assert!(https(proxy, Some("https"), None));
        assert!(https(proxy, Some("http, HTTPS"), None));
        assert!(https(proxy, None, Some("for=1.2.3.4;proto=https")));
        assert!(https(
            proxy,
            None,
            Some("proto=http, for=1.2.3.4; proto=\"https\"")
        ));
        assert!(!https(proxy, Some("https, http"), None));
        assert!(!https(proxy, None, Some("for=1.2.3.4;proto=http")));
        assert!(!https(proxy, None, None));
        assert!(!https(ip("8.8.8.8"), Some("https"), None));
        assert!(!https(ip("8.8.8.8"), None, Some("proto=https")));
        assert!(!https(None, Some("https"), None));
    }

    #[test]
    fn refuses_bad_settings() {
        assert_eq!(
            ClientIpResolver::new("x forwarded", ""),
            Err(ClientIpError::Header("x forwarded".into()))
        );
        assert!(ClientIpResolver::new("", "").is_err());
        assert!(matches!(
            ClientIpResolver::new("X-Forwarded-For", "10.0.0.0/8, proxy"),
            Err(ClientIpError::TrustedProxies(_))
        ));
        assert!(ClientIpResolver::new("X-Forwarded-For", " 10.0.0.0/8 , ,::1 ").is_ok());
    }
}
