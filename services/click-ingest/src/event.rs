//! The click event's Protobuf encoding (`traffsure.events.v1.Click`), written straight
//! from the request's borrowed data. Building a `traffsure_events::Click` first would copy
//! every string of every click into an allocation of its own only to encode and drop it.
//! Consumers decode with the generated `Click`; the tests check this encoder against it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;

use traffsure_core::user_agent::UserAgent;
use traffsure_events::{BotReason, ClickKind, CostSource, Flow};

/// One click, borrowing its fields; field numbers as in `clicks.proto`.
pub struct ClickEvent<'a> {
    pub click_hash: &'a str,
    pub flow_id: u32,
    pub ts_ms: i64,
    pub routing_key: u16,
    pub visitor_id: &'a str,
    pub ip: Option<IpAddr>,
    pub country: &'a str,
    pub user_agent: &'a str,
    pub device: &'a str,
    pub os: &'a str,
    pub browser: &'a str,
    pub referrer: &'a str,
    pub sub_id: &'a str,
    pub source: &'a str,
    /// sub1…sub10: every one is written, empty or not, so their positions survive.
    pub subs: &'a [String],
    pub cost_micros: i64,
    pub cost_currency: &'a str,
    pub destination_url: &'a str,
    pub is_bot: bool,
    pub bot_reason: BotReason,
    /// uap-core's browser, OS and device (fields 22 to 29 and 34).
    pub agent: &'a UserAgent,
    pub extra: &'a BTreeMap<String, String>,
    pub asn: u32,
    pub as_org: &'a str,
    pub datacenter: bool,
    pub rate_exceeded: bool,
    /// The funnel fields (35 to 41): what the event is, the visit a lander click-through
    /// came from, and the objects it went through.
    pub funnel: Funnel<'a>,
    /// Where `cost_micros` came from (field 42).
    pub cost_source: CostSource,
}

/// Where a click stands in its flow's funnel (`Click` fields 35 to 41); all empty for a
/// visit of a flow without landers or offers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Funnel<'a> {
    pub kind: ClickKind,
    pub parent_click_hash: &'a str,
    pub traffic_source_id: u32,
    pub lander_id: u32,
    pub offer_id: u32,
    pub network_id: u32,
    pub external_id: &'a str,
    /// The impression the click followed (`Click.impression_id`, field 45).
    pub impression_id: &'a str,
}

const VARINT: u32 = 0;
const LEN: u32 = 2;

impl<'a> ClickEvent<'a> {
    /// Sets a visit's cost by the flow's cost model in effect now (docs/costs.md): the
    /// model's under cpc and cpm, none under cpa and revshare, the link's under auto.
    pub fn cost_by(&mut self, flow: &'a Flow) {
        let (micros, currency, source) = traffsure_core::cost::click_cost(
            flow.cost_model.as_deref(),
            self.cost_micros,
            self.cost_currency,
        );
        self.cost_micros = micros;
        self.cost_currency = currency;
        self.cost_source = source;
    }

    /// Appends the encoded event to `buf`. Like prost, fields holding their default value
    /// (empty, zero, false) are left out, except the subs.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        string(buf, 1, self.click_hash);
        uint(buf, 2, u64::from(self.flow_id));
        // int64 is encoded as the two's complement u64, as prost does.
        uint(buf, 3, self.ts_ms as u64);
        uint(buf, 4, u64::from(self.routing_key));
        string(buf, 5, self.visitor_id);
        if let Some(ip) = self.ip {
            let mut text = [0u8; 48];
            let len = format_ip(ip, &mut text);
            bytes(buf, 6, &text[..len]);
        }
        string(buf, 7, self.country);
        string(buf, 8, self.user_agent);
        string(buf, 9, self.device);
        string(buf, 10, self.os);
        string(buf, 11, self.browser);
        string(buf, 12, self.referrer);
        string(buf, 13, self.sub_id);
        string(buf, 14, self.source);
        for sub in self.subs {
            key(buf, 15, LEN);
            varint(buf, sub.len() as u64);
            buf.extend_from_slice(sub.as_bytes());
        }
        uint(buf, 16, self.cost_micros as u64);
        string(buf, 17, self.destination_url);
        if self.is_bot {
            key(buf, 18, VARINT);
            buf.push(1);
        }
        for (name, value) in self.extra {
            key(buf, 19, LEN);
            varint(buf, (field_len(name) + field_len(value)) as u64);
            string(buf, 1, name);
            string(buf, 2, value);
        }
        string(buf, 20, self.cost_currency);
        uint(buf, 21, self.bot_reason as i32 as u64);
        let agent = self.agent;
        string(buf, 22, &agent.browser_family);
        string(buf, 23, &agent.browser_major);
        string(buf, 24, &agent.browser_minor);
        string(buf, 25, &agent.os_family);
        string(buf, 26, &agent.os_major);
        string(buf, 27, &agent.os_minor);
        string(buf, 28, &agent.device_family);
        string(buf, 29, &agent.device_brand);
        uint(buf, 30, u64::from(self.asn));
        string(buf, 31, self.as_org);
        uint(buf, 32, u64::from(self.datacenter));
        uint(buf, 33, u64::from(self.rate_exceeded));
        string(buf, 34, &agent.device_model);
        let funnel = &self.funnel;
        uint(buf, 35, funnel.kind as i32 as u64);
        string(buf, 36, funnel.parent_click_hash);
        uint(buf, 37, u64::from(funnel.traffic_source_id));
        uint(buf, 38, u64::from(funnel.lander_id));
        uint(buf, 39, u64::from(funnel.offer_id));
        uint(buf, 40, u64::from(funnel.network_id));
        string(buf, 41, funnel.external_id);
        string(buf, 45, funnel.impression_id);
        uint(buf, 42, self.cost_source as i32 as u64);
    }
}

fn key(buf: &mut Vec<u8>, tag: u32, wire_type: u32) {
    varint(buf, u64::from(tag << 3 | wire_type));
}

fn varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push(value as u8 | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn varint_len(value: u64) -> usize {
    // Each byte carries 7 bits; zero still takes one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Encoded size of a non-repeated string field with a one-byte key (tags below 16).
fn field_len(text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        1 + varint_len(text.len() as u64) + text.len()
    }
}

fn uint(buf: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        key(buf, tag, VARINT);
        varint(buf, value);
    }
}

fn string(buf: &mut Vec<u8>, tag: u32, text: &str) {
    bytes(buf, tag, text.as_bytes());
}

fn bytes(buf: &mut Vec<u8>, tag: u32, data: &[u8]) {
    if !data.is_empty() {
        key(buf, tag, LEN);
        varint(buf, data.len() as u64);
        buf.extend_from_slice(data);
    }
}

/// Writes `ip` as text (the same text as its `Display`) into `out`; returns the length.
fn format_ip(ip: IpAddr, out: &mut [u8; 48]) -> usize {
    match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    out[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    out[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                out[len] = b'0' + octet % 10;
                len += 1;
            }
            len
        }
        IpAddr::V6(v6) => {
            let mut cursor = std::io::Cursor::new(&mut out[..]);
            // At most 45 characters: always fits.
            let _ = write!(cursor, "{v6}");
            cursor.position() as usize
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prost::Message as _;
    use rand::{Rng, SeedableRng};
    use traffsure_events::Click;

    fn expected(event: &ClickEvent<'_>) -> Click {
        Click {
            click_hash: event.click_hash.into(),
            flow_id: event.flow_id,
            ts_ms: event.ts_ms,
            routing_key: u32::from(event.routing_key),
            visitor_id: event.visitor_id.into(),
            ip: event.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            country: event.country.into(),
            user_agent: event.user_agent.into(),
            device: event.device.into(),
            os: event.os.into(),
            browser: event.browser.into(),
            referrer: event.referrer.into(),
            sub_id: event.sub_id.into(),
            source: event.source.into(),
            subs: event.subs.to_vec(),
            cost_micros: event.cost_micros,
            cost_currency: event.cost_currency.into(),
            destination_url: event.destination_url.into(),
            is_bot: event.is_bot,
            extra: event.extra.clone(),
            bot_reason: event.bot_reason as i32,
            browser_family: event.agent.browser_family.clone(),
            browser_major: event.agent.browser_major.clone(),
            browser_minor: event.agent.browser_minor.clone(),
            os_family: event.agent.os_family.clone(),
            os_major: event.agent.os_major.clone(),
            os_minor: event.agent.os_minor.clone(),
            device_family: event.agent.device_family.clone(),
            device_brand: event.agent.device_brand.clone(),
            device_model: event.agent.device_model.clone(),
            asn: event.asn,
            as_org: event.as_org.into(),
            datacenter: event.datacenter,
            rate_exceeded: event.rate_exceeded,
            kind: event.funnel.kind as i32,
            parent_click_hash: event.funnel.parent_click_hash.into(),
            traffic_source_id: event.funnel.traffic_source_id,
            lander_id: event.funnel.lander_id,
            offer_id: event.funnel.offer_id,
            network_id: event.funnel.network_id,
            external_id: event.funnel.external_id.into(),
            impression_id: event.funnel.impression_id.into(),
            cost_source: event.cost_source as i32,
        }
    }

    #[test]
    fn formats_addresses_like_display() {
        for text in [
            "0.0.0.0",
            "1.2.3.4",
            "10.100.255.9",
            "255.255.255.255",
            "192.0.2.10",
            "::",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            let mut out = [0u8; 48];
            let len = format_ip(ip, &mut out);
            assert_eq!(std::str::from_utf8(&out[..len]).unwrap(), ip.to_string());
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..10_000 {
            let ip = IpAddr::from(rng.random::<[u8; 4]>());
            let mut out = [0u8; 48];
            let len = format_ip(ip, &mut out);
            assert_eq!(std::str::from_utf8(&out[..len]).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn varint_lengths() {
        for value in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            varint(&mut buf, value);
            assert_eq!(buf.len(), varint_len(value), "{value}");
        }
    }

    #[test]
    fn decodes_as_the_generated_click() {
        // Property: whatever the fields hold (empty, long, non-ASCII, negative numbers),
        // prost decodes exactly the click that was encoded.
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let alphabet: Vec<char> = "aZ09 &=+%?/é€\u{0}{}".chars().collect();
        for round in 0..3_000 {
            let mut text = |max: usize| -> String {
                let len = rng.random_range(0..max);
                (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect()
            };
            let strings: Vec<String> = (0..15)
                .map(|i| text(if i == 3 { 300 } else { 40 }))
                .collect();
            let agent = traffsure_core::user_agent::UserAgent {
                browser_family: text(20),
                browser_major: text(4),
                browser_minor: text(4),
                os_family: text(20),
                os_major: text(4),
                os_minor: text(4),
                device_family: text(30),
                device_brand: text(10),
                device_model: text(20),
                ..Default::default()
            };
            let bot_reason = BotReason::try_from(round % 8).unwrap();
            let subs: Vec<String> = (0..10).map(|_| text(6)).collect();
            let extra: BTreeMap<String, String> =
                (0..round % 4).map(|_| (text(8), text(200))).collect();
            let ip = match round % 3 {
                0 => None,
                1 => Some(IpAddr::from(rng.random::<[u8; 4]>())),
                _ => Some(IpAddr::from(rng.random::<[u8; 16]>())),
            };
            let event = ClickEvent {
                click_hash: &strings[0],
                flow_id: rng.random_range(0..=u32::MAX) >> rng.random_range(0..32),
                ts_ms: if round % 7 == 0 {
                    -1
                } else {
                    rng.random_range(0..i64::MAX)
                },
                routing_key: rng.random(),
                visitor_id: &strings[1],
                ip,
                country: &strings[2],
                user_agent: &strings[3],
                device: &strings[4],
                os: &strings[5],
                browser: &strings[6],
                referrer: &strings[7],
                sub_id: &strings[8],
                source: &strings[9],
                subs: &subs,
                cost_micros: if round % 5 == 0 {
                    -3
                } else {
                    rng.random_range(0..1 << 40)
                },
                cost_currency: if round % 2 == 0 { "EUR" } else { "" },
                destination_url: &strings[10],
                is_bot: rng.random(),
                bot_reason,
                agent: &agent,
                extra: &extra,
                asn: rng.random_range(0..=u32::MAX) >> rng.random_range(0..32),
                as_org: &strings[11],
                datacenter: rng.random(),
                rate_exceeded: rng.random(),
                funnel: Funnel {
                    kind: ClickKind::try_from(round % 3).unwrap(),
                    parent_click_hash: &strings[12],
                    traffic_source_id: rng.random_range(0..=u32::MAX) >> rng.random_range(0..32),
                    lander_id: rng.random_range(0..3),
                    offer_id: rng.random_range(0..=u32::MAX),
                    network_id: rng.random_range(0..1000),
                    external_id: &strings[13],
                    impression_id: if round % 2 == 0 { "" } else { &strings[14] },
                },
                cost_source: CostSource::try_from(round % 3).unwrap(),
            };
            let mut buf = Vec::new();
            event.encode(&mut buf);
            assert_eq!(Click::decode(buf.as_slice()).unwrap(), expected(&event));
        }
    }
}
