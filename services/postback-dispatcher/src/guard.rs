//! The SSRF guard: outbound postbacks go only to public http(s) endpoints.
//!
//! A URL is checked before sending (scheme, and the host when it is an IP literal), and
//! every name is resolved through [`GuardedResolver`], which drops private, loopback and
//! link-local addresses, so a DNS answer cannot point a postback inside the network.
//! `allow_private_targets` turns the address checks off (local tests and trusted setups).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Why a target is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("invalid url: {0}")]
    InvalidUrl(String),
    #[error("scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("target {0} is a private, loopback or link-local address")]
    PrivateAddress(IpAddr),
}

/// Checks what can be checked without DNS; returns the parsed URL.
pub fn check_url(url: &str, allow_private: bool) -> Result<Url, Refused> {
    let parsed = Url::parse(url).map_err(|e| Refused::InvalidUrl(e.to_string()))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(Refused::Scheme(parsed.scheme().to_string()));
    }
    let ip = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(Refused::InvalidUrl("no host".into())),
    };
    if let Some(ip) = ip {
        if !allow_private && !is_public(ip) {
            return Err(Refused::PrivateAddress(ip));
        }
    }
    Ok(parsed)
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 may reach IPv4 private space
}

/// Resolves names with the system resolver and keeps only public addresses.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (private targets are not allowed)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_other_schemes_and_private_literals() {
        assert!(check_url("https://postback.example.com/x?c=1", false).is_ok());
        assert!(check_url("http://93.184.216.34/", false).is_ok());
        assert_eq!(
            check_url("ftp://example.com/", false),
            Err(Refused::Scheme("ftp".into()))
        );
        assert!(matches!(
            check_url("file:///etc/passwd", false),
            Err(Refused::Scheme(_))
        ));
        for url in [
            "http://127.0.0.1:8080/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(
                matches!(check_url(url, false), Err(Refused::PrivateAddress(_))),
                "{url}"
            );
        }
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
        assert!(matches!(
            check_url("not a url", true),
            Err(Refused::InvalidUrl(_))
        ));
    }

    #[tokio::test]
    async fn resolver_drops_private_answers() {
        let guarded = GuardedResolver {
            allow_private: false,
        };
        let name: Name = "localhost".parse().expect("a valid name");
        assert!(guarded.resolve(name).await.is_err());
        let open = GuardedResolver {
            allow_private: true,
        };
        let name: Name = "localhost".parse().expect("a valid name");
        let addrs: Vec<_> = open
            .resolve(name)
            .await
            .expect("localhost resolves")
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
