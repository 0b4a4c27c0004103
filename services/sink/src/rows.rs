//! Table rows, one struct per ClickHouse table, built from the topic's Protobuf event
//! and the Kafka position it came from. Statuses, states and outcomes are written with
//! the tracker's words (`traffsure_core::vocab`).

use clickhouse::Row;
use prost::Message as _;
use serde::Serialize;
use traffsure_core::vocab::Vocabulary;
use traffsure_events::{
    Click, Conversion, ConversionStatus, Flow, Impression, OutboundAttempt, PostbackLogEntry,
    PostbackResult, TrackerObject,
};

/// Where a row came from in Kafka: the table is the sink's checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub partition: u16,
    pub offset: u64,
    /// `fingerprint` of the message, to recognise it in a recreated topic.
    pub fingerprint: u64,
}

/// A message's identity for the checkpoints: CRC-32 of the payload and CRC-32 of the
/// key, never 0 (which stands for "unknown" in rows stored before fingerprints).
pub fn fingerprint(key: &[u8], payload: &[u8]) -> u64 {
    let value = (u64::from(crc32fast::hash(payload)) << 32) | u64::from(crc32fast::hash(key));
    value.max(1)
}

fn seconds(ms: i64) -> u32 {
    u32::try_from(ms.max(0) / 1000).unwrap_or(u32::MAX)
}

/// A conversion's previous status: none (empty, so the rollups subtract nothing) for
/// its first version.
fn previous_status(status: ConversionStatus) -> &'static str {
    status.specified_word().unwrap_or_default()
}

fn sub(subs: &[String], i: usize) -> String {
    subs.get(i).cloned().unwrap_or_default()
}

/// The `extra` column: the tracking link's other parameters as JSON, empty when none.
fn extra_json(extra: &std::collections::BTreeMap<String, String>) -> String {
    if extra.is_empty() {
        String::new()
    } else {
        serde_json::to_string(extra).unwrap_or_default()
    }
}

/// The stored cost source (CostSource's number): an event with a cost but no source, from
/// an edge of before cost sources, paid the tracking link's (or the pixel's) own cost, as
/// migrations 0016 and 0026 count the stored ones.
fn stored_cost_source(source: i32, cost_micros: i64) -> u8 {
    match u8::try_from(source).unwrap_or_default() {
        0 if cost_micros != 0 => 1,
        source => source,
    }
}

#[derive(Debug, Row, Serialize)]
pub struct ClickRow {
    pub click_hash: String,
    pub flow_id: u32,
    pub ts: u32,
    pub ts_ms: i64,
    pub routing_key: u16,
    pub visitor_id: String,
    pub ip: String,
    pub country: String,
    pub user_agent: String,
    pub device: String,
    pub os: String,
    pub browser: String,
    pub browser_family: String,
    pub browser_major: String,
    pub browser_minor: String,
    pub os_family: String,
    pub os_major: String,
    pub os_minor: String,
    pub device_family: String,
    pub device_brand: String,
    pub device_model: String,
    pub referrer: String,
    pub sub_id: String,
    pub source: String,
    pub sub1: String,
    pub sub2: String,
    pub sub3: String,
    pub sub4: String,
    pub sub5: String,
    pub sub6: String,
    pub sub7: String,
    pub sub8: String,
    pub sub9: String,
    pub sub10: String,
    pub cost_micros: i64,
    pub cost_currency: String,
    pub destination_url: String,
    pub is_bot: u8,
    pub bot_reason: String,
    pub extra: String,
    pub kafka_partition: u16,
    pub kafka_offset: u64,
    pub kafka_fingerprint: u64,
    pub asn: u32,
    pub as_org: String,
    pub datacenter: u8,
    pub rate_exceeded: u8,
    /// ClickKind's number: 0 visit, 1 lander click-through, 2 direct visit.
    pub kind: u8,
    pub parent_click_hash: String,
    pub traffic_source_id: u32,
    pub lander_id: u32,
    pub offer_id: u32,
    pub network_id: u32,
    pub external_id: String,
    pub impression_id: String,
    /// CostSource's number: 0 unknown, 1 the tracking link, 2 the flow's cost model.
    pub cost_source: u8,
}

/// The rows of a record of the clicks topic, appended to `rows`: one per click (a
/// `ClickBatch` holds several, in order), all at the record's position, since the
/// checkpoints count records. On an error some may have been appended already.
pub fn click_rows(
    payload: &[u8],
    at: Position,
    rows: &mut Vec<ClickRow>,
) -> Result<(), prost::DecodeError> {
    for click in traffsure_events::click_payloads(payload)? {
        rows.push(click_row(click, at)?);
    }
    Ok(())
}

/// The row of one encoded click.
/// The rows a record of the clicks topic gives, counted without decoding its clicks: one
/// per click of a batch, one for anything else (an undecodable record is one refusal).
pub fn click_row_count(payload: &[u8]) -> usize {
    traffsure_events::click_payloads(payload).map_or(1, |clicks| clicks.len().max(1))
}

pub fn click_row(payload: &[u8], at: Position) -> Result<ClickRow, prost::DecodeError> {
    let c = Click::decode(payload)?;
    Ok(ClickRow {
        ts: seconds(c.ts_ms),
        ts_ms: c.ts_ms,
        routing_key: c.routing_key as u16,
        sub1: sub(&c.subs, 0),
        sub2: sub(&c.subs, 1),
        sub3: sub(&c.subs, 2),
        sub4: sub(&c.subs, 3),
        sub5: sub(&c.subs, 4),
        sub6: sub(&c.subs, 5),
        sub7: sub(&c.subs, 6),
        sub8: sub(&c.subs, 7),
        sub9: sub(&c.subs, 8),
        sub10: sub(&c.subs, 9),
        extra: extra_json(&c.extra),
        is_bot: u8::from(c.is_bot),
        bot_reason: c
            .bot_reason()
            .specified_word()
            .unwrap_or_default()
            .to_string(),
        asn: c.asn,
        datacenter: u8::from(c.datacenter),
        rate_exceeded: u8::from(c.rate_exceeded),
        kind: u8::try_from(c.kind).unwrap_or_default(),
        cost_source: stored_cost_source(c.cost_source, c.cost_micros),
        parent_click_hash: c.parent_click_hash,
        traffic_source_id: c.traffic_source_id,
        lander_id: c.lander_id,
        offer_id: c.offer_id,
        network_id: c.network_id,
        external_id: c.external_id,
        impression_id: c.impression_id,
        click_hash: c.click_hash,
        flow_id: c.flow_id,
        visitor_id: c.visitor_id,
        ip: c.ip,
        country: c.country,
        user_agent: c.user_agent,
        device: c.device,
        os: c.os,
        browser: c.browser,
        browser_family: c.browser_family,
        browser_major: c.browser_major,
        browser_minor: c.browser_minor,
        os_family: c.os_family,
        os_major: c.os_major,
        os_minor: c.os_minor,
        device_family: c.device_family,
        device_brand: c.device_brand,
        device_model: c.device_model,
        referrer: c.referrer,
        sub_id: c.sub_id,
        source: c.source,
        cost_micros: c.cost_micros,
        cost_currency: c.cost_currency,
        destination_url: c.destination_url,
        as_org: c.as_org,
        kafka_partition: at.partition,
        kafka_offset: at.offset,
        kafka_fingerprint: at.fingerprint,
    })
}

#[derive(Debug, Row, Serialize)]
pub struct ConversionRow {
    pub conversion_id: String,
    pub version: u32,
    pub click_hash: String,
    pub flow_id: u32,
    pub goal: String,
    pub status: String,
    pub previous_status: String,
    pub revenue_micros: i64,
    pub previous_revenue_micros: i64,
    pub currency: String,
    pub uid: String,
    pub postback_id: String,
    pub click_ts: u32,
    pub created_at: u32,
    pub updated_at: u32,
    pub updated_at_ms: i64,
    pub disable_postbacks: u8,
    pub click_missing: u8,
    pub reason: String,
    pub country: String,
    pub source: String,
    pub sub_id: String,
    pub sub1: String,
    pub sub2: String,
    pub sub3: String,
    pub sub4: String,
    pub sub5: String,
    pub sub6: String,
    pub sub7: String,
    pub sub8: String,
    pub sub9: String,
    pub sub10: String,
    pub device: String,
    pub os: String,
    pub browser: String,
    pub traffic_source_id: u32,
    pub lander_id: u32,
    pub offer_id: u32,
    pub network_id: u32,
    pub external_id: String,
    pub impression_id: String,
    pub follow_up: u8,
    pub over_cap: u8,
    pub payout_micros: i64,
    pub payout_currency: String,
    pub previous_payout_micros: i64,
    pub kafka_partition: u16,
    pub kafka_offset: u64,
    pub kafka_fingerprint: u64,
    /// The cpa or revshare model's cost of this version, and of the one before.
    pub cost_micros: i64,
    pub cost_currency: String,
    pub previous_cost_micros: i64,
    /// The click's visitor details and fraud signals (migration 25).
    pub bot_reason: String,
    pub browser_family: String,
    pub browser_major: String,
    pub browser_minor: String,
    pub os_family: String,
    pub os_major: String,
    pub os_minor: String,
    pub device_family: String,
    pub device_brand: String,
    pub device_model: String,
    pub asn: u32,
    pub as_org: String,
    pub datacenter: u8,
    pub rate_exceeded: u8,
    pub visitor_details: u8,
}

pub fn conversion_row(payload: &[u8], at: Position) -> Result<ConversionRow, prost::DecodeError> {
    let c = Conversion::decode(payload)?;
    Ok(ConversionRow {
        status: c.status().word().into(),
        previous_status: previous_status(c.previous_status()).into(),
        click_ts: seconds(c.click_ts_ms),
        created_at: seconds(c.created_at_ms),
        updated_at: seconds(c.updated_at_ms),
        updated_at_ms: c.updated_at_ms,
        disable_postbacks: u8::from(c.disable_postbacks),
        click_missing: u8::from(c.click_missing),
        follow_up: u8::from(c.follow_up),
        over_cap: u8::from(c.over_cap),
        payout_micros: c.payout_micros,
        payout_currency: c.payout_currency.clone(),
        previous_payout_micros: c.previous_payout_micros,
        bot_reason: c
            .bot_reason()
            .specified_word()
            .unwrap_or_default()
            .to_string(),
        datacenter: u8::from(c.datacenter),
        rate_exceeded: u8::from(c.rate_exceeded),
        visitor_details: u8::from(c.visitor_details),
        browser_family: c.browser_family,
        browser_major: c.browser_major,
        browser_minor: c.browser_minor,
        os_family: c.os_family,
        os_major: c.os_major,
        os_minor: c.os_minor,
        device_family: c.device_family,
        device_brand: c.device_brand,
        device_model: c.device_model,
        asn: c.asn,
        as_org: c.as_org,
        sub1: sub(&c.subs, 0),
        sub2: sub(&c.subs, 1),
        sub3: sub(&c.subs, 2),
        sub4: sub(&c.subs, 3),
        sub5: sub(&c.subs, 4),
        sub6: sub(&c.subs, 5),
        sub7: sub(&c.subs, 6),
        sub8: sub(&c.subs, 7),
        sub9: sub(&c.subs, 8),
        sub10: sub(&c.subs, 9),
        conversion_id: c.conversion_id,
        version: c.version,
        click_hash: c.click_hash,
        flow_id: c.flow_id,
        goal: c.goal,
        revenue_micros: c.revenue_micros,
        previous_revenue_micros: c.previous_revenue_micros,
        currency: c.currency,
        uid: c.uid,
        reason: c.reason,
        postback_id: c.postback_id,
        country: c.country,
        source: c.source,
        sub_id: c.sub_id,
        device: c.device,
        os: c.os,
        browser: c.browser,
        traffic_source_id: c.traffic_source_id,
        lander_id: c.lander_id,
        offer_id: c.offer_id,
        network_id: c.network_id,
        external_id: c.external_id,
        impression_id: c.impression_id,
        cost_micros: c.cost_micros,
        cost_currency: c.cost_currency,
        previous_cost_micros: c.previous_cost_micros,
        kafka_partition: at.partition,
        kafka_offset: at.offset,
        kafka_fingerprint: at.fingerprint,
    })
}

/// A row of `impressions` (migration 0020).
#[derive(Debug, Row, Serialize)]
pub struct ImpressionRow {
    pub impression_id: String,
    pub flow_id: u32,
    pub ts: u32,
    pub ts_ms: i64,
    pub routing_key: u16,
    pub visitor_id: String,
    pub ip: String,
    pub country: String,
    pub user_agent: String,
    pub device: String,
    pub os: String,
    pub browser: String,
    pub browser_family: String,
    pub os_family: String,
    pub device_family: String,
    pub device_brand: String,
    pub device_model: String,
    pub referrer: String,
    pub sub_id: String,
    pub source: String,
    pub sub1: String,
    pub sub2: String,
    pub sub3: String,
    pub sub4: String,
    pub sub5: String,
    pub sub6: String,
    pub sub7: String,
    pub sub8: String,
    pub sub9: String,
    pub sub10: String,
    pub cost_micros: i64,
    pub cost_currency: String,
    pub is_bot: u8,
    pub bot_reason: String,
    pub asn: u32,
    pub as_org: String,
    pub datacenter: u8,
    pub traffic_source_id: u32,
    pub external_id: String,
    pub extra: String,
    /// Where cost_micros came from (migration 0026): CostSource's number.
    pub cost_source: u8,
    pub kafka_partition: u16,
    pub kafka_offset: u64,
    pub kafka_fingerprint: u64,
}

pub fn impression_row(payload: &[u8], at: Position) -> Result<ImpressionRow, prost::DecodeError> {
    let i = Impression::decode(payload)?;
    Ok(ImpressionRow {
        cost_source: stored_cost_source(i.cost_source, i.cost_micros),
        ts: seconds(i.ts_ms),
        ts_ms: i.ts_ms,
        routing_key: i.routing_key as u16,
        sub1: sub(&i.subs, 0),
        sub2: sub(&i.subs, 1),
        sub3: sub(&i.subs, 2),
        sub4: sub(&i.subs, 3),
        sub5: sub(&i.subs, 4),
        sub6: sub(&i.subs, 5),
        sub7: sub(&i.subs, 6),
        sub8: sub(&i.subs, 7),
        sub9: sub(&i.subs, 8),
        sub10: sub(&i.subs, 9),
        extra: extra_json(&i.extra),
        is_bot: u8::from(i.is_bot),
        bot_reason: i
            .bot_reason()
            .specified_word()
            .unwrap_or_default()
            .to_string(),
        datacenter: u8::from(i.datacenter),
        impression_id: i.impression_id,
        flow_id: i.flow_id,
        visitor_id: i.visitor_id,
        ip: i.ip,
        country: i.country,
        user_agent: i.user_agent,
        device: i.device,
        os: i.os,
        browser: i.browser,
        browser_family: i.browser_family,
        os_family: i.os_family,
        device_family: i.device_family,
        device_brand: i.device_brand,
        device_model: i.device_model,
        referrer: i.referrer,
        sub_id: i.sub_id,
        source: i.source,
        cost_micros: i.cost_micros,
        cost_currency: i.cost_currency,
        asn: i.asn,
        as_org: i.as_org,
        traffic_source_id: i.traffic_source_id,
        external_id: i.external_id,
        kafka_partition: at.partition,
        kafka_offset: at.offset,
        kafka_fingerprint: at.fingerprint,
    })
}

#[derive(Debug, Row, Serialize)]
pub struct PostbackLogRow {
    pub postback_id: String,
    pub received_at: u32,
    pub received_at_ms: i64,
    pub flow_id: u32,
    pub click_hash: String,
    pub goal: String,
    pub response_status: u16,
    pub reason: String,
    pub message: String,
    pub ip: String,
    pub method: String,
    pub content_type: String,
    pub path: String,
    pub param_names: Vec<String>,
    pub param_values: Vec<String>,
    pub params_truncated: u8,
    pub delta_ms: i64,
    pub kafka_partition: u16,
    pub kafka_offset: u64,
    pub kafka_fingerprint: u64,
}

pub fn postback_log_row(
    payload: &[u8],
    at: Position,
) -> Result<PostbackLogRow, prost::DecodeError> {
    let e = PostbackLogEntry::decode(payload)?;
    let params_truncated = u8::from(e.params.iter().any(|p| p.truncated));
    let (param_names, param_values) = e.params.into_iter().map(|p| (p.name, p.value)).unzip();
    Ok(PostbackLogRow {
        postback_id: e.postback_id,
        received_at: seconds(e.received_at_ms),
        received_at_ms: e.received_at_ms,
        flow_id: e.flow_id,
        click_hash: e.click_hash,
        goal: e.goal,
        response_status: u16::try_from(e.response_status).unwrap_or(u16::MAX),
        reason: e.reason,
        message: e.message,
        ip: e.ip,
        method: e.method,
        content_type: e.content_type,
        path: e.path,
        param_names,
        param_values,
        params_truncated,
        delta_ms: e.delta_ms,
        kafka_partition: at.partition,
        kafka_offset: at.offset,
        kafka_fingerprint: at.fingerprint,
    })
}

#[derive(Debug, Row, Serialize)]
pub struct PostbackResultRow {
    pub postback_id: String,
    pub click_hash: String,
    pub flow_id: u32,
    pub outcome: String,
    pub conversion_id: String,
    pub message: String,
    pub decided_at: u32,
    pub kafka_partition: u16,
    pub kafka_offset: u64,
    pub kafka_fingerprint: u64,
}

pub fn postback_result_row(
    payload: &[u8],
    at: Position,
) -> Result<PostbackResultRow, prost::DecodeError> {
    let r = PostbackResult::decode(payload)?;
    Ok(PostbackResultRow {
        outcome: r.outcome().word().into(),
        decided_at: seconds(r.decided_at_ms),
        postback_id: r.postback_id,
        click_hash: r.click_hash,
        flow_id: r.flow_id,
        conversion_id: r.conversion_id,
        message: r.message,
        kafka_partition: at.partition,
        kafka_offset: at.offset,
        kafka_fingerprint: at.fingerprint,
    })
}

#[derive(Debug, Row, Serialize)]
pub struct FlowRow {
    pub id: u32,
    pub revision: u64,
    pub slug: String,
    pub name: String,
    pub status: String,
    pub destination_url: String,
    pub default_goal: String,
    pub updated_at: u32,
    pub kafka_partition: u16,
    pub kafka_offset: u64,
    pub kafka_fingerprint: u64,
}

pub fn flow_row(payload: &[u8], at: Position) -> Result<FlowRow, prost::DecodeError> {
    let f = Flow::decode(payload)?;
    Ok(FlowRow {
        status: f.status().word().into(),
        updated_at: seconds(f.updated_at_ms),
        id: f.id,
        revision: f.revision,
        slug: f.slug,
        name: f.name,
        destination_url: f.destination_url,
        default_goal: f.default_goal,
        kafka_partition: at.partition,
        kafka_offset: at.offset,
        kafka_fingerprint: at.fingerprint,
    })
}

/// One version of a traffic source, affiliate network, offer or lander (`tracker_objects`).
#[derive(Debug, Row, Serialize)]
pub struct ObjectRow {
    /// ObjectKind's number: 1 traffic source, 2 affiliate network, 3 offer, 4 lander.
    pub kind: u8,
    pub id: u32,
    pub revision: u64,
    pub name: String,
    pub archived: u8,
    pub created_at: u32,
    pub updated_at: u32,
    pub spec_json: String,
    pub kafka_partition: u16,
    pub kafka_offset: u64,
    pub kafka_fingerprint: u64,
}

pub fn object_row(payload: &[u8], at: Position) -> Result<ObjectRow, prost::DecodeError> {
    let o = TrackerObject::decode(payload)?;
    Ok(ObjectRow {
        kind: u8::try_from(o.kind).unwrap_or_default(),
        archived: u8::from(o.archived),
        created_at: seconds(o.created_at_ms),
        updated_at: seconds(o.updated_at_ms),
        id: o.id,
        revision: o.revision,
        name: o.name,
        spec_json: o.spec_json,
        kafka_partition: at.partition,
        kafka_offset: at.offset,
        kafka_fingerprint: at.fingerprint,
    })
}

#[derive(Debug, Row, Serialize)]
pub struct OutboundRow {
    pub attempt_id: String,
    pub conversion_id: String,
    pub conversion_version: u32,
    pub outbound_id: String,
    pub flow_id: u32,
    pub click_hash: String,
    pub goal: String,
    pub status: String,
    pub revenue_micros: i64,
    pub currency: String,
    pub method: String,
    pub url: String,
    pub request_body: String,
    pub http_status: u32,
    pub error: String,
    pub response_snippet: String,
    pub latency_ms: u32,
    pub attempt: u32,
    pub state: String,
    pub attempted_at: u32,
    pub attempted_at_ms: i64,
    pub next_attempt_at_ms: i64,
    pub manual: u8,
    pub traffic_source_id: u32,
    pub offer_id: u32,
    pub reason: String,
    pub integration: String,
    pub postback_type: String,
    pub impression_id: String,
    pub scope: String,
    pub cap_action: String,
    pub kafka_partition: u16,
    pub kafka_offset: u64,
    pub kafka_fingerprint: u64,
}

pub fn outbound_row(payload: &[u8], at: Position) -> Result<OutboundRow, prost::DecodeError> {
    let a = OutboundAttempt::decode(payload)?;
    Ok(OutboundRow {
        status: a.status().word().into(),
        state: a.state().word().into(),
        attempted_at: seconds(a.attempted_at_ms),
        attempted_at_ms: a.attempted_at_ms,
        next_attempt_at_ms: a.next_attempt_at_ms,
        manual: u8::from(a.manual),
        attempt_id: a.attempt_id,
        conversion_id: a.conversion_id,
        conversion_version: a.conversion_version,
        outbound_id: a.outbound_id,
        flow_id: a.flow_id,
        click_hash: a.click_hash,
        goal: a.goal,
        revenue_micros: a.revenue_micros,
        currency: a.currency,
        method: a.method,
        url: a.url,
        request_body: a.request_body,
        http_status: a.http_status,
        error: a.error,
        response_snippet: a.response_snippet,
        latency_ms: a.latency_ms,
        attempt: a.attempt,
        traffic_source_id: a.traffic_source_id,
        offer_id: a.offer_id,
        reason: a.reason,
        integration: a.integration,
        postback_type: a.postback_type,
        impression_id: a.impression_id,
        scope: a.scope,
        cap_action: a.cap_action,
        kafka_partition: at.partition,
        kafka_offset: at.offset,
        kafka_fingerprint: at.fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use traffsure_events::{OutboundState, PostbackOutcome};

    const AT: Position = Position {
        partition: 1,
        offset: 2,
        fingerprint: 3,
    };

    #[test]
    fn a_first_conversion_version_has_no_previous_status() -> anyhow::Result<()> {
        let mut first = Conversion::default();
        first.set_status(ConversionStatus::Pending);
        let row = conversion_row(&first.encode_to_vec(), AT)?;
        assert_eq!(
            (row.status.as_str(), row.previous_status.as_str()),
            ("pending", "")
        );
        let mut second = first.clone();
        second.set_status(ConversionStatus::Approved);
        second.set_previous_status(ConversionStatus::Pending);
        let row = conversion_row(&second.encode_to_vec(), AT)?;
        assert_eq!(
            (row.status.as_str(), row.previous_status.as_str()),
            ("approved", "pending")
        );
        assert_eq!(row.click_missing, 0);
        let missing = Conversion {
            click_missing: true,
            ..first
        };
        assert_eq!(
            conversion_row(&missing.encode_to_vec(), AT)?.click_missing,
            1
        );
        Ok(())
    }

    #[test]
    fn a_conversion_keeps_its_clicks_visitor_details() -> anyhow::Result<()> {
        let converted = Conversion {
            bot_reason: traffsure_events::BotReason::Datacenter as i32,
            browser_family: "Mobile Safari".into(),
            os_major: "17".into(),
            device_brand: "Apple".into(),
            device_model: "iPhone".into(),
            asn: 16509,
            as_org: "AMAZON-02".into(),
            datacenter: true,
            visitor_details: true,
            ..Conversion::default()
        };
        let row = conversion_row(&converted.encode_to_vec(), AT)?;
        assert_eq!(
            (
                row.bot_reason.as_str(),
                row.browser_family.as_str(),
                row.os_major.as_str(),
                row.device_brand.as_str(),
                row.device_model.as_str(),
            ),
            ("datacenter", "Mobile Safari", "17", "Apple", "iPhone")
        );
        assert_eq!(
            (
                row.asn,
                row.as_org.as_str(),
                row.datacenter,
                row.rate_exceeded
            ),
            (16509, "AMAZON-02", 1, 0)
        );
        assert_eq!(row.visitor_details, 1);
        let old = conversion_row(&Conversion::default().encode_to_vec(), AT)?;
        assert_eq!((old.visitor_details, old.bot_reason.as_str()), (0, ""));
        Ok(())
    }

    #[test]
    fn an_attempt_keeps_its_conversions_source_offer_reason_and_kind() -> anyhow::Result<()> {
        let attempt = OutboundAttempt {
            traffic_source_id: 4,
            offer_id: 9,
            reason: "fraud".into(),
            integration: "s2s".into(),
            postback_type: "conversion".into(),
            ..OutboundAttempt::default()
        };
        let row = outbound_row(&attempt.encode_to_vec(), AT)?;
        assert_eq!(
            (
                row.traffic_source_id,
                row.offer_id,
                row.reason.as_str(),
                row.integration.as_str(),
                row.postback_type.as_str()
            ),
            (4, 9, "fraud", "s2s", "conversion")
        );
        let rejected = Conversion {
            reason: "duplicate lead".into(),
            ..Conversion::default()
        };
        assert_eq!(
            conversion_row(&rejected.encode_to_vec(), AT)?.reason,
            "duplicate lead"
        );
        Ok(())
    }

    #[test]
    fn objects_and_the_click_kind_keep_their_numbers() -> anyhow::Result<()> {
        let click = Click {
            kind: traffsure_events::ClickKind::LanderClick as i32,
            parent_click_hash: "visit".into(),
            offer_id: 12,
            lander_id: 7,
            ..Click::default()
        };
        let row = click_row(&click.encode_to_vec(), AT)?;
        assert_eq!((row.kind, row.offer_id, row.lander_id), (1, 12, 7));
        assert_eq!(row.parent_click_hash, "visit");
        let object = TrackerObject {
            kind: traffsure_events::ObjectKind::Lander as i32,
            id: 7,
            name: "Quiz".into(),
            archived: true,
            updated_at_ms: 1_772_360_100_999,
            revision: 3,
            ..TrackerObject::default()
        };
        let row = object_row(&object.encode_to_vec(), AT)?;
        assert_eq!((row.kind, row.id, row.revision, row.archived), (4, 7, 3, 1));
        assert_eq!(row.updated_at, 1_772_360_100);
        Ok(())
    }

    #[test]
    fn a_click_batch_gives_a_row_per_click_all_at_the_records_position() -> anyhow::Result<()> {
        let click = |hash: &str| Click {
            click_hash: hash.into(),
            flow_id: 7,
            ..Click::default()
        };
        let mut record = Vec::new();
        for hash in ["a", "b", "c"] {
            traffsure_events::push_batched_click(&mut record, &click(hash).encode_to_vec());
        }
        // A batch fills the sink's batches by its rows, counted without decoding.
        assert_eq!(click_row_count(&record), 3);
        assert_eq!(click_row_count(&click("d").encode_to_vec()), 1);
        let mut rows = Vec::new();
        click_rows(&record, AT, &mut rows)?;
        let hashes: Vec<&str> = rows.iter().map(|r| r.click_hash.as_str()).collect();
        assert_eq!(hashes, ["a", "b", "c"]);
        for row in &rows {
            assert_eq!(
                (row.kafka_partition, row.kafka_offset, row.kafka_fingerprint),
                (1, 2, 3)
            );
            assert_eq!(row.flow_id, 7);
        }
        // A record of one click, after the batch's rows.
        click_rows(&click("d").encode_to_vec(), AT, &mut rows)?;
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[3].click_hash, "d");
        // A batch cut short is an error, not fewer rows.
        record.pop();
        assert!(click_rows(&record, AT, &mut Vec::new()).is_err());
        Ok(())
    }

    #[test]
    fn states_and_outcomes_use_the_trackers_words() -> anyhow::Result<()> {
        let mut attempt = OutboundAttempt::default();
        let row = outbound_row(&attempt.encode_to_vec(), AT)?;
        assert_eq!(row.state, "scheduled");
        attempt.set_state(OutboundState::Retrying);
        let row = outbound_row(&attempt.encode_to_vec(), AT)?;
        assert_eq!(row.state, "retrying");
        let mut result = PostbackResult::default();
        result.set_outcome(PostbackOutcome::ClickNotFound);
        let row = postback_result_row(&result.encode_to_vec(), AT)?;
        assert_eq!(row.outcome, "click_not_found");
        result.set_outcome(PostbackOutcome::ClickMissing);
        let row = postback_result_row(&result.encode_to_vec(), AT)?;
        assert_eq!(row.outcome, "click_missing");
        Ok(())
    }
}
