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

    /// The two-letter country code of `ip`, or an empty string when unknown.
    pub fn country(&self, ip: IpAddr) -> String {
        let Some(reader) = &self.reader else {
            return String::new();
        };
        match reader.lookup::<Record>(ip) {
            Ok(Some(record)) => record
                .country_code
                .or(record.country.and_then(|c| c.iso_code))
                .unwrap_or_default()
                .to_ascii_uppercase(),
            _ => String::new(),
        }
    }
}
