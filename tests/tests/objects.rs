//! Traffic sources, affiliate networks, offers and landers through the reporting API on
//! the real stack: CRUD of each kind with its validation errors and archive, objects made
//! from the templates catalogue, a flow naming a source and a funnel stored on the `flows`
//! topic with the objects' details filled in (and again when an offer changes), and the
//! source's postback reaching a local receiver with the source's click id and the payout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use traffsure_events::{Conversion, ConversionStatus, Flow};
use traffsure_kafka::Topics;
use traffsure_tests::kafka_topic::read_events;
use traffsure_tests::{eventually, serve_local, Stack, StackOptions};

const API: &str = "reporting-api";
const DISPATCHER: &str = "postback-dispatcher";
const POSTBACK_BASE: &str = "https://pb.example.com";

async fn stack(services: &[&'static str]) -> anyhow::Result<Stack> {
    Stack::start_with(
        StackOptions::default()
            .services(services)
            .env(API, "TRAFFSURE__POSTBACK_BASE_URL", POSTBACK_BASE)
            .env(
                API,
                "TRAFFSURE__TRACKING_BASE_URL",
                "https://trk.example.com",
            )
            .env(
                DISPATCHER,
                "TRAFFSURE__OUTBOUND__ALLOW_PRIVATE_TARGETS",
                "true",
            ),
    )
    .await
}

/// A request that must answer `want`; returns the body.
async fn expect(
    stack: &Stack,
    method: Method,
    path: &str,
    body: Option<Value>,
    want: u16,
) -> anyhow::Result<Value> {
    stack.api_expect(method, path, body, want).await
}

async fn get(stack: &Stack, path: &str) -> anyhow::Result<Value> {
    expect(stack, Method::GET, path, None, 200).await
}

async fn put(stack: &Stack, path: &str, body: Value) -> anyhow::Result<Value> {
    expect(stack, Method::PUT, path, Some(body), 200).await
}

/// A `POST` without a body (archive, unarchive) that must answer 200.
async fn post(stack: &Stack, path: &str) -> anyhow::Result<Value> {
    expect(stack, Method::POST, path, None, 200).await
}

/// A request that must be refused with 422 naming `field`.
async fn refused(
    stack: &Stack,
    method: Method,
    path: &str,
    body: Value,
    field: &str,
) -> anyhow::Result<String> {
    let json = expect(stack, method, path, Some(body), 422).await?;
    assert_eq!(json["field"], field, "{path}: {json}");
    assert_eq!(json["code"], "invalid_field", "{json}");
    Ok(json["message"].as_str().unwrap_or_default().to_string())
}

async fn create(stack: &Stack, kind: &str, body: Value) -> anyhow::Result<Value> {
    expect(
        stack,
        Method::POST,
        &format!("/api/v1/{kind}"),
        Some(body),
        201,
    )
    .await
}

fn ids(list: &Value, key: &str) -> Vec<u64> {
    list[key]
        .as_array()
        .map(|items| items.iter().filter_map(|o| o["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// The newest stored version of flow `id` on the stack's `flows` topic, once it has at
/// least `revision`.
async fn stored_flow(stack: &Stack, id: u32, revision: u64) -> anyhow::Result<Flow> {
    let (brokers, topic) = (
        stack.options.kafka_brokers.clone(),
        Topics::new(&stack.topic_prefix).flows,
    );
    let flows = tokio::task::spawn_blocking(move || {
        read_events::<Flow>(
            &brokers,
            &topic,
            Duration::from_secs(30),
            Duration::from_millis(300),
            |flows| flows.iter().any(|f| f.id == id && f.revision >= revision),
        )
    })
    .await??;
    flows
        .into_iter()
        .filter(|f| f.id == id)
        .max_by_key(|f| f.revision)
        .filter(|f| f.revision >= revision)
        .with_context(|| format!("flow {id} revision {revision} not on the flows topic"))
}

#[tokio::test]
async fn each_kind_round_trips_with_validation_and_archive() -> anyhow::Result<()> {
    let stack = stack(&[API]).await?;
    let result = crud(&stack).await;
    stack.print_failure(&result);
    result
}

async fn crud(stack: &Stack) -> anyhow::Result<()> {
    // One valid spec and one change per kind, and refused specs with the field named.
    let kinds = [
        (
            "traffic-sources",
            "traffic_sources",
            json!({"name": "Push A", "parameters": {"sub1": "{zoneid}", "cost": "{cost}", "external_id": "{clickid}"},
                   "postback_url": "https://push.test/pb?aid={{aid}}&c={external_id}&p={payout}",
                   "placeholders": {"aid": "77"}}),
            json!({"name": "Push B", "parameters": {"sub2": "{zoneid}"}}),
            vec![
                (
                    json!({"name": "X", "parameters": {"zone": "{zoneid}"}}),
                    "parameters.zone",
                ),
                (
                    json!({"name": "X", "postback_url": "https://push.test/?c={clickid}"}),
                    "postback_url",
                ),
                (
                    json!({"name": "X", "postback_url": "https://push.test/?a={{aid}}"}),
                    "placeholders.aid",
                ),
                (
                    json!({"name": "X", "template": "no-such-template"}),
                    "template",
                ),
            ],
        ),
        (
            "affiliate-networks",
            "affiliate_networks",
            json!({"name": "Net", "click_param": "aff_sub", "status_map": {"1": "approved", "2": "Rejected"}}),
            json!({"name": "Net 2", "click_param": "s2"}),
            vec![
                (json!({"name": "X", "click_param": "a b"}), "click_param"),
                (
                    json!({"name": "X", "status_map": {"1": "paid"}}),
                    "status_map.1",
                ),
            ],
        ),
        (
            "offers",
            "offers",
            json!({"name": "Offer", "url": "https://offer.test/?c={click}", "payout": "12.50", "currency": "eur"}),
            json!({"name": "Offer 2", "url": "https://offer2.test/", "payout": null}),
            vec![
                (
                    json!({"name": "X", "url": "https://offer.test/{nope}"}),
                    "url",
                ),
                (
                    json!({"name": "X", "url": "https://offer.test/", "payout": "-3"}),
                    "payout",
                ),
                (
                    json!({"name": "X", "url": "https://offer.test/", "network_id": 99}),
                    "network_id",
                ),
            ],
        ),
        (
            "landers",
            "landers",
            json!({"name": "Quiz", "url": "https://lp.test/quiz", "offers": 2}),
            json!({"name": "Quiz 2", "url": "https://lp.test/quiz2"}),
            vec![
                (
                    json!({"name": "X", "url": "https://lp.test/", "offers": 0}),
                    "offers",
                ),
                (json!({"name": "", "url": "https://lp.test/"}), "name"),
                (json!({"name": "X"}), "body"),
            ],
        ),
    ];
    for (kind, key, spec, change, bad) in kinds {
        let path = format!("/api/v1/{kind}");
        let first = create(stack, kind, spec.clone()).await?;
        let second = create(stack, kind, change.clone()).await?;
        assert_eq!(
            (first["id"].as_u64(), second["id"].as_u64()),
            (Some(1), Some(2)),
            "{kind}"
        );
        assert_eq!(first["revision"], 1);
        assert_eq!(first["archived"], false);
        let read = get(stack, &format!("{path}/1")).await?;
        assert_eq!(read, first, "{kind}");
        for (body, field) in bad {
            refused(stack, Method::POST, &path, body, field).await?;
        }
        let updated = put(stack, &format!("{path}/1"), change.clone()).await?;
        assert_eq!(
            (updated["id"].as_u64(), updated["revision"].as_u64()),
            (Some(1), Some(2))
        );
        assert_eq!(updated["name"], change["name"]);
        assert_eq!(updated["created_at_ms"], first["created_at_ms"]);
        expect(stack, Method::GET, &format!("{path}/9"), None, 404).await?;
        expect(
            stack,
            Method::PUT,
            &format!("{path}/9"),
            Some(change.clone()),
            404,
        )
        .await?;
        // Archive hides it from the list but not from ?archived=1, and unarchive undoes it.
        let archived = post(stack, &format!("{path}/1/archive")).await?;
        assert_eq!(
            (
                archived["archived"].as_bool(),
                archived["revision"].as_u64()
            ),
            (Some(true), Some(3))
        );
        let list = get(stack, &path).await?;
        assert_eq!(ids(&list, key), [2], "{kind}: {list}");
        let all = get(stack, &format!("{path}?archived=1")).await?;
        assert_eq!(ids(&all, key), [1, 2], "{kind}");
        expect(
            stack,
            Method::GET,
            &format!("{path}?archived=maybe"),
            None,
            422,
        )
        .await?;
        // A new object never takes an archived one's id.
        let third = create(stack, kind, change.clone()).await?;
        assert_eq!(third["id"], 3);
        let back = post(stack, &format!("{path}/1/unarchive")).await?;
        assert_eq!(back["archived"], false);
        let list = get(stack, &path).await?;
        assert_eq!(ids(&list, key), [1, 2, 3], "{kind}");
    }
    // What the views normalised.
    let offer = get(stack, "/api/v1/offers/3").await?;
    assert_eq!(offer["payout"], Value::Null);
    let network = get(stack, "/api/v1/affiliate-networks/2").await?;
    assert_eq!(network["click_param"], "s2");
    assert!(
        network["postback_url"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{POSTBACK_BASE}/postback?click={{click}}")),
        "{network}"
    );
    // An offer names a network that exists and is not archived (unless it did before).
    let offer = create(
        stack,
        "offers",
        json!({"name": "Networked", "url": "https://o.test/", "network_id": 1, "payout": 3}),
    )
    .await?;
    assert_eq!(
        (offer["network_id"].as_u64(), offer["payout"].as_str()),
        (Some(1), Some("3"))
    );
    post(stack, "/api/v1/affiliate-networks/1/archive").await?;
    let message = refused(
        stack,
        Method::POST,
        "/api/v1/offers",
        json!({"name": "Late", "url": "https://o.test/", "network_id": 1}),
        "network_id",
    )
    .await?;
    assert!(message.contains("archived"), "{message}");
    let id = offer["id"].as_u64().unwrap_or_default();
    put(
        stack,
        &format!("/api/v1/offers/{id}"),
        json!({"name": "Networked", "url": "https://o.test/v2", "network_id": 1}),
    )
    .await?;

    // The catalogue, and objects made from it.
    let sources = get(stack, "/api/v1/templates/traffic-sources").await?;
    let networks = get(stack, "/api/v1/templates/affiliate-networks").await?;
    let sources = sources["templates"].as_array().cloned().unwrap_or_default();
    let networks = networks["templates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        sources.len() >= 25 && networks.len() >= 15,
        "{} {}",
        sources.len(),
        networks.len()
    );
    let template = sources
        .iter()
        .find(|t| t["placeholders"].as_array().is_some_and(|p| !p.is_empty()))
        .context("a source template with placeholders")?;
    let template_id = template["id"].as_str().unwrap_or_default();
    let fills: BTreeMap<String, String> = template["placeholders"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                format!("acct{i}"),
            )
        })
        .collect();
    let missing = refused(
        stack,
        Method::POST,
        "/api/v1/traffic-sources/from-template",
        json!({"template": template_id}),
        &format!(
            "placeholders.{}",
            fills.keys().next().cloned().unwrap_or_default()
        ),
    )
    .await?;
    assert!(missing.contains("needs a value"), "{missing}");
    refused(
        stack,
        Method::POST,
        "/api/v1/traffic-sources/from-template",
        json!({"template": "nope"}),
        "template",
    )
    .await?;
    let source = expect(
        stack,
        Method::POST,
        "/api/v1/traffic-sources/from-template",
        Some(json!({"template": template_id, "placeholders": fills})),
        201,
    )
    .await?;
    assert_eq!(source["name"], template["name"]);
    assert_eq!(source["template"], template["id"]);
    assert_eq!(source["parameters"], template["parameters"]);
    assert_eq!(source["postback_url"], template["postback_url"]);
    assert_eq!(source["id"], 4);
    let network_template = &networks[0];
    let network = expect(
        stack,
        Method::POST,
        "/api/v1/affiliate-networks/from-template",
        Some(json!({"template": network_template["id"], "name": "My network"})),
        201,
    )
    .await?;
    assert_eq!(network["name"], "My network");
    assert_eq!(network["click_param"], network_template["click_id_param"]);
    assert_eq!(network["status_map"], network_template["status_map"]);
    let expected_postback = network_template["postback_url"]
        .as_str()
        .unwrap_or_default()
        .replacen("{tracker_postback_base}", POSTBACK_BASE, 1);
    assert_eq!(network["postback_url"], expected_postback.as_str());
    Ok(())
}

#[tokio::test]
async fn a_flow_with_a_source_and_a_path_is_stored_filled_and_follows_its_objects(
) -> anyhow::Result<()> {
    let stack = stack(&[API]).await?;
    let result = funnel(&stack).await;
    stack.print_failure(&result);
    result
}

async fn funnel(stack: &Stack) -> anyhow::Result<()> {
    // Sent as text: the source's parameters keep the order written.
    let response = stack
        .api(Method::POST, "/api/v1/traffic-sources")
        .header("content-type", "application/json")
        .body(
            r#"{"name": "Push", "parameters": {"sub1": "{zoneid}", "cost": "{cost}", "external_id": "{clickid}"},
               "postback_url": "https://push.test/pb?aid={{aid}}&visitor_id={external_id}&payout={payout}",
               "placeholders": {"aid": "a 1"}, "postback_goals": ["sale"]}"#,
        )
        .send()
        .await?;
    assert_eq!(response.status(), 201);
    let text = response.text().await?;
    assert!(
        text.contains(
            r#""parameters":{"sub1":"{zoneid}","cost":"{cost}","external_id":"{clickid}"}"#
        ),
        "{text}"
    );
    create(
        stack,
        "affiliate-networks",
        json!({"name": "Net", "click_param": "aff_sub", "status_map": {"1": "approved", "2": "rejected"}}),
    )
    .await?;
    create(
        stack,
        "offers",
        json!({"name": "A", "url": "https://a.test/?s={sub1}", "network_id": 1, "payout": "12.50"}),
    )
    .await?;
    create(
        stack,
        "offers",
        json!({"name": "B", "url": "https://b.test/?c={click}"}),
    )
    .await?;
    create(
        stack,
        "landers",
        json!({"name": "LP", "url": "https://lp.test/", "offers": 2}),
    )
    .await?;
    create(
        stack,
        "landers",
        json!({"name": "Old", "url": "https://old.test/"}),
    )
    .await?;
    post(stack, "/api/v1/landers/2/archive").await?;

    let path = json!({"landers": [{"lander_id": 1, "weight": 70}], "offers": [{"offer_id": 1, "weight": 1}, {"offer_id": 2, "weight": 3}]});
    let spec = json!({
        "name": "Summer", "slug": "summer", "traffic_source_id": 1, "path": path,
        "goals": [{"key": "sale"}],
        "rules": [{"conditions": [{"field": "country", "values": ["DE"]}], "path": {"offers": [{"offer_id": 2, "weight": 1}]}}],
    });
    // Unknown and archived objects are refused, naming the field.
    let mut unknown = spec.clone();
    unknown["path"]["offers"][1]["offer_id"] = json!(9);
    let message = refused(
        stack,
        Method::POST,
        "/api/v1/flows",
        unknown,
        "path.offers[1].offer_id",
    )
    .await?;
    assert_eq!(message, "offer 9 does not exist");
    let mut archived = spec.clone();
    archived["path"]["landers"][0]["lander_id"] = json!(2);
    refused(
        stack,
        Method::POST,
        "/api/v1/flows",
        archived,
        "path.landers[0].lander_id",
    )
    .await?;
    let mut no_source = spec.clone();
    no_source["traffic_source_id"] = json!(5);
    refused(
        stack,
        Method::POST,
        "/api/v1/flows",
        no_source,
        "traffic_source_id",
    )
    .await?;
    let mut no_offer = spec.clone();
    no_offer["path"]["offers"] = json!([]);
    refused(
        stack,
        Method::POST,
        "/api/v1/flows",
        no_offer,
        "path.offers",
    )
    .await?;

    let view = stack.create_flow(spec.clone()).await?;
    let id = view["id"].as_u64().context("flow id")? as u32;
    assert_eq!(view["traffic_source_id"], 1);
    assert_eq!(view["path"], path);
    assert_eq!(view["rules"][0]["path"]["offers"][0]["offer_id"], 2);
    assert_eq!(
        view["tracking_link"],
        "https://trk.example.com/c/summer?sub1={zoneid}&cost={cost}&external_id={clickid}"
    );
    let flow = stored_flow(stack, id, 1).await?;
    let stored = flow.path.as_ref().context("stored path")?;
    assert_eq!(
        (
            stored.landers[0].lander_id,
            stored.landers[0].url.as_str(),
            stored.landers[0].weight
        ),
        (1, "https://lp.test/", 70)
    );
    let a = &stored.offers[0];
    assert_eq!(
        (
            a.offer_id,
            a.url.as_str(),
            a.network_id,
            a.click_param.as_str()
        ),
        (1, "https://a.test/?s={sub1}", 1, "aff_sub")
    );
    assert_eq!(
        (a.has_payout, a.payout_micros, a.currency.as_str()),
        (true, 12_500_000, "USD")
    );
    assert_eq!(a.status_map.get("2").map(String::as_str), Some("rejected"));
    let b = &stored.offers[1];
    assert_eq!(
        (
            b.offer_id,
            b.weight,
            b.has_payout,
            b.network_id,
            b.click_param.as_str()
        ),
        (2, 3, false, 0, "")
    );
    assert_eq!(
        flow.rules[0]
            .path
            .as_ref()
            .map(|p| p.offers[0].url.as_str()),
        Some("https://b.test/?c={click}")
    );
    let postback = flow
        .traffic_source_postback
        .as_ref()
        .context("source postback")?;
    assert_eq!(postback.id, "source-1");
    assert_eq!(
        postback.url,
        "https://push.test/pb?aid=a%201&visitor_id={external_id}&payout={payout}"
    );
    assert_eq!(
        (
            postback.goals.clone(),
            postback.on_status.as_str(),
            postback.enabled
        ),
        (vec!["sale".to_string()], "approved", true)
    );

    // Changing an offer's URL and a network's click parameter re-publishes the flow.
    put(
        stack,
        "/api/v1/offers/2",
        json!({"name": "B", "url": "https://b2.test/?c={click}"}),
    )
    .await?;
    let flow = stored_flow(stack, id, 2).await?;
    assert_eq!(
        flow.path.as_ref().map(|p| p.offers[1].url.as_str()),
        Some("https://b2.test/?c={click}")
    );
    assert_eq!(
        flow.rules[0]
            .path
            .as_ref()
            .map(|p| p.offers[0].url.as_str()),
        Some("https://b2.test/?c={click}")
    );
    put(
        stack,
        "/api/v1/affiliate-networks/1",
        json!({"name": "Net", "click_param": "sub9"}),
    )
    .await?;
    let flow = stored_flow(stack, id, 3).await?;
    assert_eq!(
        flow.path.as_ref().map(|p| p.offers[0].click_param.as_str()),
        Some("sub9")
    );
    let view = get(stack, &format!("/api/v1/flows/{id}")).await?;
    assert_eq!(view["revision"], 3);
    // A change that leaves what the flow carries alone does not re-publish it.
    put(
        stack,
        "/api/v1/landers/2",
        json!({"name": "Older", "url": "https://older.test/"}),
    )
    .await?;
    let view = get(stack, &format!("/api/v1/flows/{id}")).await?;
    assert_eq!(view["revision"], 3);
    // Archiving an object the flow uses keeps the flow working and editable.
    post(stack, "/api/v1/offers/1/archive").await?;
    let mut renamed = spec.clone();
    renamed["name"] = json!("Summer 2");
    let view = put(stack, &format!("/api/v1/flows/{id}"), renamed).await?;
    assert_eq!(view["revision"], 4);
    // A flow without source or path is as it was.
    let plain = stack
        .create_flow(json!({"name": "Plain", "destination_url": "https://x.test/?c={click}"}))
        .await?;
    assert_eq!(plain["traffic_source_id"], Value::Null);
    assert_eq!(plain["path"], Value::Null);
    let plain_id = plain["id"].as_u64().unwrap_or_default();
    assert_eq!(
        plain["tracking_link"],
        format!("https://trk.example.com/c/{plain_id}?sub_id={{sub_id}}&source={{source}}")
    );
    let stored_plain = stored_flow(stack, plain_id as u32, 1).await?;
    assert_eq!(
        (stored_plain.path, stored_plain.traffic_source_postback),
        (None, None)
    );
    Ok(())
}

/// What the local receiver got: each request's query.
type Hits = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

async fn record(request: HttpRequest, hits: web::Data<Hits>) -> HttpResponse {
    let query = serde_urlencoded::from_str(request.query_string()).unwrap_or_default();
    hits.lock().unwrap_or_else(|p| p.into_inner()).push(query);
    HttpResponse::Ok().body("ok")
}

#[tokio::test]
async fn the_sources_postback_arrives_with_its_click_id_and_the_payout() -> anyhow::Result<()> {
    let hits: Hits = Arc::default();
    let data = web::Data::new(hits.clone());
    let port = serve_local(move |app| {
        app.app_data(data.clone()).default_service(web::to(record));
    })?;
    let stack = stack(&[API, DISPATCHER]).await?;
    let result = source_postback(&stack, port, &hits).await;
    stack.print_failure(&result);
    result
}

async fn source_postback(stack: &Stack, port: u16, hits: &Hits) -> anyhow::Result<()> {
    create(
        stack,
        "traffic-sources",
        json!({"name": "Push", "parameters": {"sub1": "{zoneid}", "external_id": "{clickid}"},
               "postback_url": format!("http://127.0.0.1:{port}/pb?aid={{{{aid}}}}&visitor_id={{external_id}}&payout={{payout}}&status={{status}}"),
               "placeholders": {"aid": "acct-9"}}),
    )
    .await?;
    create(
        stack,
        "offers",
        json!({"name": "A", "url": "https://a.test/"}),
    )
    .await?;
    let flow = stack
        .create_flow(json!({"name": "Push flow", "traffic_source_id": 1, "path": {"offers": [{"offer_id": 1}]}}))
        .await?;
    let flow_id = flow["id"].as_u64().context("flow id")? as u32;
    // The dispatcher has the flow once it is on the topic (it follows it from there).
    stored_flow(stack, flow_id, 1).await?;
    let settings = traffsure_config::KafkaSettings {
        brokers: stack.options.kafka_brokers.clone(),
        topic_prefix: stack.topic_prefix.clone(),
        ..Default::default()
    };
    let producer = traffsure_kafka::producer(&settings)?;
    let topics = Topics::new(&stack.topic_prefix);
    let conversion = |id: &str, status: ConversionStatus| {
        let mut c = Conversion {
            conversion_id: id.into(),
            version: 1,
            click_hash: format!("click-{id}"),
            flow_id,
            goal: "conversion".into(),
            revenue_micros: 7_250_000,
            currency: "USD".into(),
            external_id: format!("ext {id}/z"),
            routing_key: 17,
            created_at_ms: traffsure_core::now_ms(),
            updated_at_ms: traffsure_core::now_ms(),
            ..Conversion::default()
        };
        c.set_status(status);
        c
    };
    // An approved conversion fires the source's postback (on_status approved); a pending
    // one does not.
    for c in [
        conversion("cv1", ConversionStatus::Approved),
        conversion("cv2", ConversionStatus::Pending),
    ] {
        let key = traffsure_kafka::routing_key_bytes(c.routing_key as u16);
        traffsure_kafka::send_event(&producer, &topics.conversions, &key, &c).await?;
    }
    let got = eventually(Duration::from_secs(60), || async {
        let hits = hits.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok((!hits.is_empty()).then_some(hits))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_now = hits.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(got_now.len(), 1, "{got_now:?}");
    let query = &got[0];
    assert_eq!(
        query.get("visitor_id").map(String::as_str),
        Some("ext cv1/z")
    );
    assert_eq!(query.get("payout").map(String::as_str), Some("7.25"));
    assert_eq!(query.get("aid").map(String::as_str), Some("acct-9"));
    assert_eq!(query.get("status").map(String::as_str), Some("approved"));
    Ok(())
}
