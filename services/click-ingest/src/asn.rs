//! The autonomous system (AS number and organisation) of a visitor's address, from an
//! ASN database loaded into memory at start: ip-location-db's CSV files
//! (`asn-ipv4.csv`, `asn-ipv6.csv`: `start,end,asn,organisation`, inclusive ranges) or a
//! MaxMind-format file in the GeoLite2-ASN layout (`.mmdb`).

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// What the database says about one address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AsInfo<'a> {
    pub asn: u32,
    pub org: &'a str,
}

/// An ASN database, or none (every lookup answers unknown).
#[derive(Default)]
pub struct AsnDatabase {
    v4: Vec<Range<u32>>,
    v6: Vec<Range<u128>>,
    orgs: Vec<Box<str>>,
    mmdb: Option<maxminddb::Reader<Vec<u8>>>,
}

struct Range<T> {
    start: T,
    end: T,
    asn: u32,
    org: u32,
}

#[derive(Deserialize)]
struct MmdbRecord<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
}

impl AsnDatabase {
    /// Opens `path`: empty = no database; a `.mmdb` file; a CSV file; or a directory
    /// holding `asn-ipv4.csv` and/or `asn-ipv6.csv`.
    pub fn open(path: &str) -> anyhow::Result<Self> {
        if path.is_empty() {
            return Ok(Self::default());
        }
        let path = Path::new(path);
        if path.extension().is_some_and(|e| e == "mmdb") {
            let reader = maxminddb::Reader::open_readfile(path)
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
            return Ok(Self {
                mmdb: Some(reader),
                ..Self::default()
            });
        }
        let files: Vec<std::path::PathBuf> = if path.is_dir() {
            ["asn-ipv4.csv", "asn-ipv6.csv"]
                .iter()
                .map(|name| path.join(name))
                .filter(|file| file.exists())
                .collect()
        } else {
            vec![path.to_path_buf()]
        };
        anyhow::ensure!(
            !files.is_empty(),
            "{} holds neither asn-ipv4.csv nor asn-ipv6.csv",
            path.display()
        );
        let mut db = Self::default();
        let mut org_ids = rustc_hash::FxHashMap::<String, u32>::default();
        for file in files {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let row = parse_line(line).with_context(|| {
                    format!(
                        "{} line {}: not start,end,asn,organisation",
                        file.display(),
                        n + 1
                    )
                })?;
                let next = db.orgs.len() as u32;
                let org = *org_ids.entry(row.org.to_string()).or_insert_with(|| {
                    db.orgs.push(row.org.into());
                    next
                });
                match (row.start, row.end) {
                    (IpAddr::V4(start), IpAddr::V4(end)) => db.v4.push(Range {
                        start: u32::from(start),
                        end: u32::from(end),
                        asn: row.asn,
                        org,
                    }),
                    (IpAddr::V6(start), IpAddr::V6(end)) => db.v6.push(Range {
                        start: u128::from(start),
                        end: u128::from(end),
                        asn: row.asn,
                        org,
                    }),
                    _ => anyhow::bail!(
                        "{} line {}: start and end are of different IP versions",
                        file.display(),
                        n + 1
                    ),
                }
            }
        }
        db.v4.sort_unstable_by_key(|r| r.start);
        db.v6.sort_unstable_by_key(|r| r.start);
        Ok(db)
    }

    /// Ranges loaded (0 for an MMDB file).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The autonomous system of `ip`; AS 0 and an empty organisation when unknown.
    pub fn lookup(&self, ip: IpAddr) -> AsInfo<'_> {
        if let Some(reader) = &self.mmdb {
            return match reader.lookup::<MmdbRecord>(ip) {
                Ok(Some(record)) => AsInfo {
                    asn: record.autonomous_system_number.unwrap_or_default(),
                    org: record.autonomous_system_organization.unwrap_or_default(),
                },
                _ => AsInfo::default(),
            };
        }
        let found = match ip {
            IpAddr::V4(v4) => find(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => find(&self.v4, u32::from(v4)),
                None => find(&self.v6, u128::from(v6)),
            },
        };
        found
            .map(|(asn, org)| AsInfo {
                asn,
                org: self
                    .orgs
                    .get(org as usize)
                    .map(|o| &**o)
                    .unwrap_or_default(),
            })
            .unwrap_or_default()
    }
}

fn find<T: Copy + Ord>(ranges: &[Range<T>], ip: T) -> Option<(u32, u32)> {
    let index = ranges.partition_point(|r| r.start <= ip).checked_sub(1)?;
    let range = &ranges[index];
    (ip <= range.end).then_some((range.asn, range.org))
}

struct Row<'a> {
    start: IpAddr,
    end: IpAddr,
    asn: u32,
    org: std::borrow::Cow<'a, str>,
}

/// `start,end,asn,organisation`; the organisation may be quoted (`"Cloudflare, Inc."`,
/// `""` for a quote inside).
fn parse_line(line: &str) -> Option<Row<'_>> {
    let mut fields = line.splitn(4, ',');
    let start = fields.next()?.trim().parse().ok()?;
    let end = fields.next()?.trim().parse().ok()?;
    let asn = fields.next()?.trim().parse().ok()?;
    let org = fields.next().unwrap_or_default().trim();
    let org = match org
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(quoted) if quoted.contains("\"\"") => {
            std::borrow::Cow::Owned(quoted.replace("\"\"", "\""))
        }
        Some(quoted) => std::borrow::Cow::Borrowed(quoted),
        None => std::borrow::Cow::Borrowed(org),
    };
    Some(Row {
        start,
        end,
        asn,
        org,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_ranges_of_both_ip_versions() {
        let dir = std::env::temp_dir().join(format!("asn-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("asn-ipv4.csv"),
            "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n\
             8.8.8.0,8.8.8.255,15169,Google LLC\n\
             9.0.0.0,9.0.0.9,7,\"The \"\"Quoted\"\" Co\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("asn-ipv6.csv"),
            "2001:4860::,2001:4860:ffff:ffff:ffff:ffff:ffff:ffff,15169,Google LLC\n",
        )
        .unwrap();
        let db = AsnDatabase::open(dir.to_str().unwrap()).unwrap();
        let at = |ip: &str| db.lookup(ip.parse().unwrap());
        assert_eq!(
            at("1.0.0.1"),
            AsInfo {
                asn: 13335,
                org: "Cloudflare, Inc."
            }
        );
        assert_eq!(
            at("8.8.8.8"),
            AsInfo {
                asn: 15169,
                org: "Google LLC"
            }
        );
        assert_eq!(at("::ffff:8.8.8.8").asn, 15169);
        assert_eq!(at("9.0.0.9").org, "The \"Quoted\" Co");
        assert_eq!(at("2001:4860:4860::8888").asn, 15169);
        assert_eq!(at("1.0.1.0"), AsInfo::default());
        assert_eq!(at("0.0.0.1"), AsInfo::default());
        assert_eq!(at("2001:db8::1"), AsInfo::default());
        assert_eq!(db.len(), 4);
        std::fs::write(dir.join("asn-ipv4.csv"), "1.0.0.0,nonsense\n").unwrap();
        let err = AsnDatabase::open(dir.to_str().unwrap()).err().unwrap();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            AsnDatabase::open("")
                .unwrap()
                .lookup("1.1.1.1".parse().unwrap())
                .asn,
            0
        );
    }
}
