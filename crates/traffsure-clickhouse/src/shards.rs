//! Several shards (`clickhouse.shards`): one server URL per shard of the cluster, in the
//! order of its `remote_servers`, the first being `clickhouse.url`.
//!
//! The sink writes Kafka partition `p`'s rows to shard `p mod N` (so a partition's rows,
//! its checkpoint and its insert blocks live on one shard), the migrations run their
//! `ALTER`s, backfills and rebuilds once on each shard and the migration lock on the
//! first, and the tables reporting-api writes live on the first shard (the `Distributed`
//! tables' sharding key is 0). docs/cluster.md, "Shards", says why exactly-once holds.
//! Empty: the one shard of `clickhouse.url`, as before.

use clickhouse::Client;
use traffsure_config::ClickHouseSettings;

/// The server URL of each shard: `clickhouse.shards`, or `clickhouse.url` alone. The
/// error says what is wrong with the list, for `clickhouse.shards: <error>`.
pub fn urls(settings: &ClickHouseSettings) -> Result<Vec<String>, String> {
    let listed = settings.shards.trim();
    if listed.is_empty() {
        return Ok(vec![settings.url.clone()]);
    }
    if !crate::cluster::enabled(settings) {
        return Err(format!(
            "{listed:?} lists shards but clickhouse.cluster is empty: shards are those of a \
             cluster in the servers' remote_servers"
        ));
    }
    let mut urls: Vec<String> = Vec::new();
    for (i, entry) in listed.split(',').enumerate() {
        let url = entry.trim();
        let n = i + 1;
        if url.is_empty() {
            return Err(format!("entry {n} of {listed:?} is empty"));
        }
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest
            .is_none_or(|r| r.is_empty() || r.starts_with('/') || r.contains(char::is_whitespace))
        {
            return Err(format!(
                "entry {n} ({url:?}) is not an http:// or https:// URL of a server"
            ));
        }
        if urls.iter().any(|u| same_server(u, url)) {
            return Err(format!(
                "{url:?} is listed twice: each shard is written through a server of its own"
            ));
        }
        urls.push(url.to_string());
    }
    if !same_server(&urls[0], &settings.url) {
        return Err(format!(
            "the first entry ({:?}) must be clickhouse.url ({:?}): the first shard holds the \
             migration lock and the tables reporting-api writes",
            urls[0], settings.url
        ));
    }
    Ok(urls)
}

fn same_server(a: &str, b: &str) -> bool {
    a.trim()
        .trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim().trim_end_matches('/'))
}

/// A client for the configured database per shard, the first shard's first.
pub fn clients(settings: &ClickHouseSettings) -> Result<Vec<Client>, String> {
    Ok(urls(settings)?
        .into_iter()
        .map(|url| {
            crate::client(&ClickHouseSettings {
                url,
                ..settings.clone()
            })
        })
        .collect())
}

/// Checks the list against the cluster as its servers see it: as many entries as the
/// cluster has shards in `remote_servers`, each entry a server of the shard at its place.
/// `Ok(Err(why))`: the list is wrong; `Err`: a server did not answer.
pub async fn check_cluster(
    settings: &ClickHouseSettings,
) -> Result<Result<(), String>, clickhouse::error::Error> {
    if !crate::cluster::enabled(settings) {
        return Ok(Ok(()));
    }
    let cluster = settings.cluster.trim();
    let urls = match urls(settings) {
        Ok(urls) => urls,
        Err(why) => return Ok(Err(why)),
    };
    let first = crate::server_client(settings);
    let shards: u64 = first
        .query("SELECT count(DISTINCT shard_num) FROM system.clusters WHERE cluster = ?")
        .bind(cluster)
        .fetch_one()
        .await?;
    if shards == 0 {
        return Ok(Err(format!(
            "clickhouse.cluster {cluster:?} is not in the remote_servers of {}",
            settings.url
        )));
    }
    if shards != urls.len() as u64 {
        return Ok(Err(format!(
            "cluster {cluster:?} has {shards} shards in remote_servers but {} server(s) are \
             listed (clickhouse.url alone when clickhouse.shards is empty): list one server \
             of each shard, in the order of remote_servers",
            urls.len()
        )));
    }
    for (i, url) in urls.iter().enumerate() {
        let server = crate::server_client(&ClickHouseSettings {
            url: url.clone(),
            ..settings.clone()
        });
        let local: Vec<u32> = server
            .query(
                "SELECT DISTINCT toUInt32(shard_num) FROM system.clusters \
                 WHERE cluster = ? AND is_local ORDER BY 1",
            )
            .bind(cluster)
            .fetch_all()
            .await?;
        let place = i as u32 + 1;
        if local != [place] {
            return Ok(Err(format!(
                "entry {place} ({url:?}) is a server of shard {local:?} of cluster {cluster:?}, \
                 not of shard {place}: list one server of each shard, in the order of \
                 remote_servers"
            )));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, cluster: &str, shards: &str) -> ClickHouseSettings {
        ClickHouseSettings {
            url: url.into(),
            cluster: cluster.into(),
            shards: shards.into(),
            ..ClickHouseSettings::default()
        }
    }

    #[test]
    fn an_empty_list_is_the_one_server_of_the_url() {
        assert_eq!(
            urls(&settings("http://a:8123", "", "")).expect("a valid list"),
            vec!["http://a:8123"]
        );
        assert_eq!(
            urls(&settings("http://a:8123", "c", " ")).expect("a valid list"),
            vec!["http://a:8123"]
        );
    }

    #[test]
    fn a_list_names_one_server_per_shard_the_url_first() {
        assert_eq!(
            urls(&settings(
                "http://a:8123",
                "c",
                "http://a:8123/, https://b:8443"
            ))
            .expect("a valid list"),
            vec!["http://a:8123/", "https://b:8443"]
        );
    }

    #[test]
    fn a_wrong_list_is_refused_with_the_reason() {
        let refused = |url: &str, cluster: &str, shards: &str| {
            urls(&settings(url, cluster, shards)).expect_err(shards)
        };
        assert!(refused("http://a:1", "", "http://a:1,http://b:1").contains("clickhouse.cluster"));
        assert!(refused("http://a:1", "c", "http://a:1,,http://b:1").contains("entry 2"));
        assert!(refused("http://a:1", "c", "http://a:1,b:1").contains("entry 2 (\"b:1\")"));
        assert!(refused("http://a:1", "c", "http://a:1,http://").contains("entry 2"));
        assert!(refused("http://a:1", "c", "http://a:1,http://A:1/").contains("listed twice"));
        assert!(refused("http://a:1", "c", "http://b:1,http://a:1").contains("clickhouse.url"));
    }
}
