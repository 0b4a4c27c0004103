//! Country lookup from a MaxMind-format database (MMDB), IPv4 and IPv6.

use std::net::IpAddr;

use serde::Deserialize;

pub struct GeoIp {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
}

/// Both common layouts: `{country_code}` (ip-location-db) and `{country: {iso_code}}` (GeoIP2).
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(borrow, default)]
    country: Option<Country<'a>>,
}

#[derive(Deserialize)]
struct Country<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

impl GeoIp {
    pub fn open(path: &str) -> anyhow::Result<Self> {
        if path.is_empty() {
            return Ok(Self { reader: None });
        }
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| anyhow::anyhow!("cannot open {path}: {e}"))?;
        Ok(Self {
            reader: Some(reader),
        })
    }

    /// The two-letter country code of `ip` (uppercase), or an empty code when unknown.
    pub fn country(&self, ip: IpAddr) -> CountryCode {
        let Some(reader) = &self.reader else {
            return CountryCode::default();
        };
        match reader.lookup::<Record>(ip) {
            Ok(Some(record)) => CountryCode::new(
                record
                    .country_code
                    .or(record.country.and_then(|c| c.iso_code))
                    .unwrap_or_default(),
            ),
            _ => CountryCode::default(),
        }
    }
}

/// An ISO 3166 alpha-2 code held inline (no allocation per click); empty when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountryCode {
    code: [u8; 2],
    len: u8,
}

impl CountryCode {
    /// `code` uppercased when it is two ASCII letters, else the empty code.
    pub fn new(code: &str) -> Self {
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Self {
                code: [a.to_ascii_uppercase(), b.to_ascii_uppercase()],
                len: 2,
            },
            _ => Self::default(),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.code[..usize::from(self.len)]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes_are_two_letters_uppercased() {
        assert_eq!(CountryCode::new("de").as_str(), "DE");
        assert_eq!(CountryCode::new("US").as_str(), "US");
        for bad in ["", "D", "DEU", "1A", "é", "D\u{0}"] {
            assert_eq!(CountryCode::new(bad).as_str(), "", "{bad:?}");
        }
    }
}
