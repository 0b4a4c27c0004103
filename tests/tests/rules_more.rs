//! The richer rule conditions on the real edge, with the real ASN, city and GeoIP
//! databases: for each condition a flow whose one rule sends matching clicks to
//! `yes.test` and the rest to `no.test`, and clicks that match and clicks that don't;
//! then OR groups alongside AND conditions. Addresses are presented through the trusted
//! proxy's X-Forwarded-For.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use traffsure_tests::kafka_topic::publish_flow;
use traffsure_tests::{eventually, geoip_file, Stack, StackOptions};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const GALAXY: &str = "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.6478.71 Mobile Safari/537.36";
const FIREFOX: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Firefox/115.0";
/// London (England), Andrews & Arnold, AS20712.
const LONDON: &str = "81.2.69.160";
/// Ulm (Baden-Wurttemberg), Deutsche Telekom, AS3320.
const ULM: &str = "62.157.140.133";
const GOOGLE_V6: &str = "2001:4860:4860::8888";
const GOOGLE_V4: &str = "8.8.8.8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_new_condition_routes_matching_clicks_only() -> anyhow::Result<()> {
    let edge = "click-ingest";
    let stack = Stack::start_with(
        StackOptions::default()
            .services(&[edge])
            .env(edge, "TRAFFSURE__CLIENT_IP__TRUSTED_PROXIES", "127.0.0.1")
            .env(
                edge,
                "TRAFFSURE__GEOIP__DATABASE",
                geoip_file("country.mmdb")?,
            )
            .env(edge, "TRAFFSURE__FRAUD__ASN_DATABASE", geoip_file("asn")?)
            .env(
                edge,
                "TRAFFSURE__FRAUD__CITY_DATABASE",
                geoip_file("city.mmdb")?,
            ),
    )
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

/// One click: the address, then header name/value pairs; answers the destination
/// without its query.
struct Click<'a> {
    ip: &'a str,
    headers: &'a [(&'a str, &'a str)],
}

/// A flow's name, its rule's conditions, its time zone, clicks that match, clicks that don't.
type Case<'a> = (&'a str, Value, &'a str, Vec<Click<'a>>, Vec<Click<'a>>);

fn c<'a>(ip: &'a str, headers: &'a [(&'a str, &'a str)]) -> Click<'a> {
    Click { ip, headers }
}

async fn destination(stack: &Stack, slug: &str, click: &Click<'_>) -> anyhow::Result<String> {
    let mut request = stack
        .http
        .get(stack.url("click-ingest", &format!("/c/{slug}")))
        .header("x-forwarded-for", click.ip);
    for (name, value) in click.headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    anyhow::ensure!(response.status() == 302, "{slug}: {}", response.status());
    Ok(response.headers()["location"].to_str()?.to_string())
}

/// Hour (0-23) and weekday (0 = Monday) now, nine hours east of UTC (`Etc/GMT-9`).
fn tokyo_now() -> (u64, u64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        + 9 * 3600;
    // 1970-01-01 was a Thursday.
    ((secs / 3600) % 24, (secs / 86_400 + 3) % 7)
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let (hour, day) = tokyo_now();
    let this_hour = format!("{hour}-{}", (hour + 1) % 24);
    let other_hours = format!("{}-{}", (hour + 6) % 24, (hour + 8) % 24);
    let today = format!("{}-{}", DAYS[day as usize], DAYS[(day as usize + 1) % 7]);
    let other_days = format!(
        "{}-{}",
        DAYS[(day as usize + 2) % 7],
        DAYS[(day as usize + 4) % 7]
    );
    let (de, en) = (
        [("accept-language", "de-DE,de;q=0.9,en;q=0.5")],
        [("accept-language", "en-US,en;q=0.9")],
    );
    let (google, bing) = (
        [("referer", "https://www.google.com/search?q=x")],
        [("referer", "https://bing.com/")],
    );
    let (iphone, galaxy, firefox) = (
        [("user-agent", IPHONE)],
        [("user-agent", GALAXY)],
        [("user-agent", FIREFOX)],
    );
    let cases: Vec<Case> = vec![
        (
            "city",
            json!([{"field": "city", "values": ["London"]}]),
            "",
            vec![c(LONDON, &[])],
            vec![c(ULM, &[])],
        ),
        (
            "region",
            json!([{"field": "region", "values": ["baden-wurttemberg"]}]),
            "",
            vec![c(ULM, &[])],
            vec![c(LONDON, &[])],
        ),
        (
            "asn",
            json!([{"field": "asn", "values": ["AS3320"]}]),
            "",
            vec![c(ULM, &[])],
            vec![c(LONDON, &[])],
        ),
        (
            "as_org",
            json!([{"field": "as_org", "values": ["arnold"]}]),
            "",
            vec![c(LONDON, &[])],
            vec![c(ULM, &[])],
        ),
        (
            "language",
            json!([{"field": "language", "values": ["de"]}]),
            "",
            vec![c(ULM, &de)],
            vec![c(ULM, &en), c(ULM, &[])],
        ),
        (
            "referrer_domain",
            json!([{"field": "referrer_domain", "values": ["google.com"]}]),
            "",
            vec![c(ULM, &google)],
            vec![c(ULM, &bing), c(ULM, &[])],
        ),
        (
            "hour",
            json!([{"field": "hour", "values": [this_hour]}]),
            "Etc/GMT-9",
            vec![c(ULM, &[])],
            vec![],
        ),
        (
            "other hours",
            json!([{"field": "hour", "values": [other_hours]}]),
            "Etc/GMT-9",
            vec![],
            vec![c(ULM, &[])],
        ),
        (
            "weekday",
            json!([{"field": "weekday", "values": [today]}]),
            "Etc/GMT-9",
            vec![c(ULM, &[])],
            vec![],
        ),
        (
            "other days",
            json!([{"field": "weekday", "values": [other_days]}]),
            "Etc/GMT-9",
            vec![],
            vec![c(ULM, &[])],
        ),
        (
            "os_version",
            json!([{"field": "os_version", "values": ["17-18"]}]),
            "",
            vec![c(ULM, &iphone)],
            vec![c(ULM, &galaxy), c(ULM, &firefox)],
        ),
        (
            "browser_version",
            json!([{"field": "browser_version", "values": [">=126"]}]),
            "",
            vec![c(ULM, &galaxy)],
            vec![c(ULM, &firefox)],
        ),
        (
            "device_brand",
            json!([{"field": "device_brand", "values": ["samsung"]}]),
            "",
            vec![c(ULM, &galaxy)],
            vec![c(ULM, &iphone), c(ULM, &firefox)],
        ),
        (
            "ip_version",
            json!([{"field": "ip_version", "values": ["6"]}]),
            "",
            vec![c(GOOGLE_V6, &[])],
            vec![c(GOOGLE_V4, &[])],
        ),
        (
            "not_in",
            json!([{"field": "language", "op": "not_in", "values": ["de", "fr"]}]),
            "",
            vec![c(ULM, &en)],
            vec![c(ULM, &de)],
        ),
    ];
    let topic = format!("{}flows", stack.topic_prefix);
    let brokers = &stack.options.kafka_brokers;
    let slug = |n: usize| format!("more-{n}-{}", stack.id);
    for (n, (name, conditions, zone, _, _)) in cases.iter().enumerate() {
        publish_flow(brokers, &topic, n as u32 + 1, json!({
            "name": name, "slug": slug(n), "destination_url": "https://no.test/",
            "time_zone": zone,
            "rules": [{"conditions": conditions, "destinations": [{"url": "https://yes.test/"}]}]
        }), None)
        .await?;
    }
    // OR groups: IPv4 clicks from London or in German.
    let or_slug = format!("or-{}", stack.id);
    publish_flow(
        brokers,
        &topic,
        100,
        json!({
            "name": "or", "slug": or_slug, "destination_url": "https://no.test/",
            "rules": [{"conditions": [{"field": "ip_version", "values": ["4"]}],
                       "any_of": [[{"field": "city", "values": ["London"]}],
                                  [{"field": "language", "values": ["de"]}]],
                       "destinations": [{"url": "https://yes.test/"}]}]
        }),
        None,
    )
    .await?;
    eventually(Duration::from_secs(20), || async {
        let response = stack
            .http
            .get(stack.url("click-ingest", &format!("/c/{or_slug}")))
            .send()
            .await?;
        Ok((response.status() == 302).then_some(()))
    })
    .await?;
    for (n, (name, _, _, yes, no)) in cases.iter().enumerate() {
        eventually(Duration::from_secs(20), || async {
            Ok(destination(stack, &slug(n), &c(ULM, &[])).await.ok())
        })
        .await?;
        for click in yes {
            assert_eq!(
                destination(stack, &slug(n), click).await?,
                "https://yes.test/",
                "{name} from {}: {:?}",
                click.ip,
                click.headers
            );
        }
        for click in no {
            assert_eq!(
                destination(stack, &slug(n), click).await?,
                "https://no.test/",
                "{name} from {}: {:?}",
                click.ip,
                click.headers
            );
        }
    }
    let or = |click: Click<'static>| {
        let or_slug = or_slug.clone();
        async move { destination(stack, &or_slug, &click).await }
    };
    assert_eq!(or(c(LONDON, &[])).await?, "https://yes.test/");
    assert_eq!(
        or(c(ULM, &[("accept-language", "de")])).await?,
        "https://yes.test/"
    );
    assert_eq!(
        or(c(ULM, &[("accept-language", "en")])).await?,
        "https://no.test/"
    );
    // The AND part still holds: IPv6 in German is not routed.
    assert_eq!(
        or(c(GOOGLE_V6, &[("accept-language", "de")])).await?,
        "https://no.test/"
    );
    Ok(())
}
