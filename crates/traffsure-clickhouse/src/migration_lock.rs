//! Which of several processes starting at once applies the pending migrations: the sink
//! (every replica) and reporting-api all migrate at start, and ClickHouse 18.16 has no
//! transactions or compare-and-set to elect one.
//!
//! The lock is a table of claims, `schema_migration_claims (version, owner, claimed_at)`.
//! A migrator inserts a claim for the version it migrates to (owner: a fresh UUID,
//! claimed_at: the server's `now()`), repeats it as a heartbeat every quarter lease, and
//! waits the settle interval. Then, and every poll after, it reads the claims: the owner
//! with the earliest first claim (ties: the smaller owner) among those whose last claim is
//! younger than the lease holds the lock. The holder migrates and records the version in
//! `schema_migrations`; the others wait until that record appears, and take over in claim
//! order when the holder's heartbeats stop for a lease (it died).
//!
//! Why two migrators never both hold it: a claim is kept only if its `INSERT` returned
//! within `settle - 1 s` (else the migrator starts again under a new owner), so a claim
//! stamped second T is visible to every reader by T + settle (the stamp is the second
//! the insert began, floored). A migrator decides no earlier than settle after its own
//! insert returned, which is after its own stamp + settle: every claim ordered before
//! its own is visible by then, so the earliest it sees is the earliest there is, and
//! two migrators cannot each see themselves first. All times are the server's clock, so
//! the lease reads the same to everyone. A migrator that misses its own heartbeat for
//! half a lease gives up its place and claims again, so it never returns to the head of
//! the queue after others may have judged it dead.
//!
//! What a lease cannot promise: a holder frozen for longer than the lease (or a killed
//! holder's last statement still running in the server) overlaps its successor. The
//! migrations are written for that: each statement is idempotent, and backfills rebuild
//! whole partitions (`crate::rebuild`) instead of adding to them, so a second run leaves
//! the same rows.

use std::time::{Duration, Instant};

use clickhouse::Client;

/// How long a migrator waits for other claims to show, how long a silent holder keeps
/// the lock, and how often a waiter looks again. Every process migrating one database
/// must use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockTimings {
    /// Longer than any claim insert takes to become visible, plus the 1 s resolution of
    /// `claimed_at`.
    pub settle: Duration,
    /// A holder whose last heartbeat is older than this is dead.
    pub lease: Duration,
    pub poll: Duration,
}

impl Default for LockTimings {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(3),
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
        }
    }
}

pub(crate) const CREATE_CLAIMS: &str = "CREATE TABLE IF NOT EXISTS schema_migration_claims \
     (version UInt32, owner String, claimed_at DateTime) \
     ENGINE = MergeTree() ORDER BY (version, claimed_at, owner)";

/// Whether `version` is recorded in `schema_migrations`.
pub(crate) async fn recorded(
    client: &Client,
    version: u32,
) -> Result<bool, clickhouse::error::Error> {
    let applied: u64 = client
        .query("SELECT count() FROM schema_migrations WHERE version = ?")
        .bind(version)
        .fetch_one()
        .await?;
    Ok(applied > 0)
}

/// Whether `version` is recorded in `schema_migrations` on every shard (`shards`: a
/// client per shard; one for a single server).
pub(crate) async fn recorded_everywhere(
    shards: &[Client],
    version: u32,
) -> Result<bool, clickhouse::error::Error> {
    for client in shards {
        if !recorded(client, version).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs `work` (given the holder's owner id) if this process wins the lock for
/// `version`; returns `Ok(false)` without running it when another process recorded
/// `version` first on every shard of `shards`. The claims live on `client` (the first
/// shard's server). `work` must record `version` in `schema_migrations` when done.
pub(crate) async fn exclusively<W, Fut>(
    client: &Client,
    shards: &[Client],
    version: u32,
    timings: &LockTimings,
    work: W,
) -> Result<bool, clickhouse::error::Error>
where
    W: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), clickhouse::error::Error>>,
{
    client.query(CREATE_CLAIMS).execute().await?;
    let owner = loop {
        match wait_for_turn(client, shards, version, timings).await? {
            Turn::Recorded => return Ok(false),
            Turn::Rejoin => continue,
            Turn::Mine(owner) => break owner,
        }
    };
    tracing::info!(version, owner = %owner, "migration lock taken");
    let work = work(owner.clone());
    tokio::pin!(work);
    let mut heartbeat = tokio::time::interval(timings.lease / 4);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            result = &mut work => return result.map(|()| true),
            _ = heartbeat.tick() => {
                // A missed heartbeat may let another migrator start too; the migrations
                // are written to survive that, so the work goes on.
                if let Err(error) = claim(client, version, &owner).await {
                    tracing::warn!(version, %error, "migration lock heartbeat failed");
                }
            }
        }
    }
}

enum Turn {
    /// Another process recorded the version.
    Recorded,
    /// This process holds the lock under this owner id.
    Mine(String),
    /// The claim cannot be trusted (slow to write, or heartbeats missed): claim anew.
    Rejoin,
}

async fn wait_for_turn(
    client: &Client,
    shards: &[Client],
    version: u32,
    timings: &LockTimings,
) -> Result<Turn, clickhouse::error::Error> {
    let owner = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    claim(client, version, &owner).await?;
    let mut last_beat = Instant::now();
    if last_beat - started + Duration::from_secs(1) >= timings.settle {
        tracing::warn!(version, "migration claim slow to write, claiming again");
        return Ok(Turn::Rejoin);
    }
    tokio::time::sleep(timings.settle).await;
    loop {
        if recorded_everywhere(shards, version).await? {
            return Ok(Turn::Recorded);
        }
        if last_beat.elapsed() >= timings.lease / 2 {
            tracing::warn!(version, "migration claim lapsed, claiming again");
            return Ok(Turn::Rejoin);
        }
        if holder(client, version, timings.lease).await?.as_deref() == Some(owner.as_str()) {
            return Ok(Turn::Mine(owner));
        }
        tokio::time::sleep(timings.poll).await;
        if last_beat.elapsed() >= timings.lease / 4 {
            let sent = Instant::now();
            claim(client, version, &owner).await?;
            // Stamped when the insert began: the lease runs from there.
            last_beat = sent;
        }
    }
}

async fn claim(client: &Client, version: u32, owner: &str) -> Result<(), clickhouse::error::Error> {
    client
        .query(
            "INSERT INTO schema_migration_claims (version, owner, claimed_at) \
             SELECT ?, ?, now()",
        )
        .bind(version)
        .bind(owner)
        .execute()
        .await
}

/// The owner holding the lock: the earliest first claim among owners heard from within
/// the lease.
async fn holder(
    client: &Client,
    version: u32,
    lease: Duration,
) -> Result<Option<String>, clickhouse::error::Error> {
    client
        .query(
            "SELECT owner FROM (\
                 SELECT owner, min(claimed_at) AS first, max(claimed_at) AS last \
                 FROM schema_migration_claims WHERE version = ? GROUP BY owner\
             ) WHERE last >= now() - ? ORDER BY first, owner LIMIT 1",
        )
        .bind(version)
        .bind(lease.as_secs().max(1))
        .fetch_optional::<String>()
        .await
}
