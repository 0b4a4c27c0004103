//! Whether a visitor's address belongs to a hosting provider, cloud or CDN: the
//! datacenter flag. The ranges come from the `iporigin` package's table (PyPI, MIT code,
//! data from the providers' own feeds and CC0 aggregations), a packed file of
//! non-overlapping ranges each labelled with a provider and a kind (`hosting`, `cdn`,
//! `vpn`, `tor`, `bot`); which kinds count as datacenter is a setting.
//!
//! Layout (little-endian): `IPORIGIN`, u16 format version (1), u64 build time, u16 label
//! count, u32 IPv4 and u32 IPv6 range counts; labels as u16 length + `provider\tkind`;
//! IPv4 ranges as u32 start, u32 end, u16 label; IPv6 ranges as 16-byte start, 16-byte
//! end, u16 label; ranges sorted by start.

use std::net::IpAddr;

use anyhow::{bail, Context};

/// The hosting ranges, or none (no address is a datacenter's).
#[derive(Default)]
pub struct HostingRanges {
    v4: Vec<(u32, u32, u16)>,
    v6: Vec<(u128, u128, u16)>,
    /// Per label: its provider and whether its kind counts as datacenter.
    labels: Vec<(Box<str>, bool)>,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        let bytes = self
            .data
            .get(self.at..self.at + n)
            .context("the file ends early")?;
        self.at += n;
        Ok(bytes)
    }
    fn array<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u16(&mut self) -> anyhow::Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
}

impl HostingRanges {
    /// Reads the table at `path` (empty = none); `kinds` are the kinds that count as
    /// datacenter.
    pub fn open(path: &str, kinds: &[String]) -> anyhow::Result<Self> {
        if path.is_empty() {
            return Ok(Self::default());
        }
        let data = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        Self::parse(&data, kinds).with_context(|| format!("{path} is not an iporigin range table"))
    }

    fn parse(data: &[u8], kinds: &[String]) -> anyhow::Result<Self> {
        let mut r = Reader { data, at: 0 };
        if r.take(8)? != b"IPORIGIN" {
            bail!("no IPORIGIN header");
        }
        let version = r.u16()?;
        if version != 1 {
            bail!("format version {version}, only 1 is known");
        }
        r.take(8)?;
        let labels = r.u16()?;
        let (v4, v6) = (r.u32()?, r.u32()?);
        let mut ranges = Self::default();
        for _ in 0..labels {
            let len = usize::from(r.u16()?);
            let text = std::str::from_utf8(r.take(len)?).context("a label is not UTF-8")?;
            let (provider, kind) = text.split_once('\t').unwrap_or((text, ""));
            let datacenter = kinds.iter().any(|k| k.eq_ignore_ascii_case(kind));
            ranges.labels.push((provider.into(), datacenter));
        }
        let label = |l: u16| -> anyhow::Result<u16> {
            if usize::from(l) < ranges.labels.len() {
                Ok(l)
            } else {
                bail!("a range names label {l} of {}", ranges.labels.len())
            }
        };
        for _ in 0..v4 {
            let (start, end, l) = (r.u32()?, r.u32()?, r.u16()?);
            ranges.v4.push((start, end, label(l)?));
        }
        for _ in 0..v6 {
            let start = u128::from_be_bytes(r.array()?);
            let end = u128::from_be_bytes(r.array()?);
            let l = r.u16()?;
            ranges.v6.push((start, end, label(l)?));
        }
        ranges.v4.sort_unstable_by_key(|r| r.0);
        ranges.v6.sort_unstable_by_key(|r| r.0);
        Ok(ranges)
    }

    /// Ranges loaded.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The provider of `ip` when it is in a range of a datacenter kind.
    pub fn datacenter(&self, ip: IpAddr) -> Option<&str> {
        let label = match ip {
            IpAddr::V4(v4) => find(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => find(&self.v4, u32::from(v4)),
                None => find(&self.v6, u128::from(v6)),
            },
        }?;
        let (provider, datacenter) = self.labels.get(usize::from(label))?;
        datacenter.then_some(&**provider)
    }
}

fn find<T: Copy + Ord>(ranges: &[(T, T, u16)], ip: T) -> Option<u16> {
    let index = ranges.partition_point(|r| r.0 <= ip).checked_sub(1)?;
    let (_, end, label) = ranges[index];
    (ip <= end).then_some(label)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table() -> Vec<u8> {
        let mut t = b"IPORIGIN".to_vec();
        t.extend(1u16.to_le_bytes());
        t.extend(0u64.to_le_bytes());
        t.extend(2u16.to_le_bytes());
        t.extend(1u32.to_le_bytes());
        t.extend(1u32.to_le_bytes());
        for label in ["Amazon AWS\thosting", "Mullvad\tvpn"] {
            t.extend((label.len() as u16).to_le_bytes());
            t.extend(label.as_bytes());
        }
        t.extend(u32::from(std::net::Ipv4Addr::new(3, 0, 0, 0)).to_le_bytes());
        t.extend(u32::from(std::net::Ipv4Addr::new(3, 255, 255, 255)).to_le_bytes());
        t.extend(0u16.to_le_bytes());
        let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        t.extend(v6("2a03:1b20::"));
        t.extend(v6("2a03:1b20:ffff:ffff:ffff:ffff:ffff:ffff"));
        t.extend(1u16.to_le_bytes());
        t
    }

    #[test]
    fn flags_the_kinds_asked_for() {
        let kinds = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ranges = HostingRanges::parse(&table(), &kinds(&["hosting"])).unwrap();
        let dc = |ip: &str| ranges.datacenter(ip.parse().unwrap());
        assert_eq!(dc("3.1.2.3"), Some("Amazon AWS"));
        assert_eq!(dc("::ffff:3.1.2.3"), Some("Amazon AWS"));
        assert_eq!(dc("4.0.0.0"), None);
        assert_eq!(dc("2a03:1b20::1"), None);
        let with_vpn = HostingRanges::parse(&table(), &kinds(&["hosting", "VPN"])).unwrap();
        assert_eq!(
            with_vpn.datacenter("2a03:1b20::1".parse().unwrap()),
            Some("Mullvad")
        );
        assert_eq!(with_vpn.len(), 2);
        let mut truncated = table();
        truncated.truncate(40);
        assert!(HostingRanges::parse(&truncated, &[]).is_err());
        assert!(HostingRanges::parse(b"NOTATABLE", &[]).is_err());
    }
}
