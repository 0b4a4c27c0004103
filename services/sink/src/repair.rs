//! Repairs what an INSERT cut between its parts left out of the materialized views.
//!
//! A ClickHouse INSERT writes the raw part, then runs the table's materialized views one
//! after another, each writing a part of its own, and nothing makes that atomic: a server
//! killed, or ZooKeeper lost, between two of those parts leaves the raw rows (and the
//! views already run) stored, the views after it not, and the INSERT answers an error.
//! Retrying cannot fill the gap: the checkpoint, if its view ran, drops the rows; if it
//! did not, a replicated table drops the repeated block as a duplicate, views and all
//! (and a non-replicated one stores the raw rows twice, the views already run twice).
//!
//! So after every failed insert the sink looks, before anything else, at what of the
//! rows it sent is stored, and completes it ([`repair`]):
//!
//! - none of the raw rows: nothing was stored, the retry sends the same rows;
//! - all of them: for every view of the table, the sink finds whether its part landed and
//!   writes the part of each view that did not, computed by the view's own `SELECT` over
//!   exactly those raw rows (their Kafka positions), so the repaired part is the one the
//!   INSERT would have written;
//! - some: a block split over several raw parts (several partitions of the table) and
//!   cut between them; nothing is repaired (logged, counted), the retry stores the rest.
//!
//! Whether a view's part landed: the checkpoint view's is there when the checkpoint shows
//! the rows. A rollup's (a `SummingMergeTree` fed by views of this table only) is found by
//! its sums: over the hours the rows fall in, what every view of the table into the
//! rollup computes from the whole raw table (the truth), less what the rollup holds, is
//! the gap; the gap is 0 when every part landed, and the sum of the missing views' parts
//! when some did not. The sink computes each view's part over the rows it sent and writes
//! exactly the views whose parts add up to the gap, in every value column and every hour.
//! This is exact because nothing else writes the raw table meanwhile: one insert per table
//! runs at a time, and the next starts only after the repair. When the gap matches no set
//! of views (a writer that is not this sink instance mid-insert on the same hours, an
//! earlier gap never repaired, or a raw table whose merges folded rows the rollup still
//! counts), the sink looks again a few times, then leaves the rollup as it is (logged,
//! counted in `traffsure_sink_view_repairs_total{result="unresolved"}`): a repair never
//! writes what it cannot show is missing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use clickhouse::error::Error;
use clickhouse::Client;

use crate::metrics;

/// ClickHouse error codes of a query that cannot run however often it is tried
/// (SYNTAX_ERROR, UNKNOWN_IDENTIFIER, UNKNOWN_FUNCTION, UNKNOWN_TABLE, ILLEGAL_TYPE_OF_ARGUMENT,
/// NUMBER_OF_COLUMNS_DOESNT_MATCH), or whose data is refused.
const QUERY_ERROR_CODES: &[u32] = &[62, 47, 46, 60, 43, 20];

/// Whether a repair failed for its own query rather than for a passing reason.
pub fn is_query_error(error: &Error) -> bool {
    matches!(error, Error::RowNotFound)
        || crate::table::is_bad_data(error)
        || crate::table::has_code(error, QUERY_ERROR_CODES)
}

/// ClickHouse error codes that pass with time: the table read-only or ZooKeeper away
/// (242, 225, 999), an insert of unknown status (319), too many parts or queries (252,
/// 202), timeouts and broken connections (159, 209, 210, 3, 32), a query cancelled or
/// aborted (394, 236).
const PASSING_CODES: &[u32] = &[242, 225, 999, 319, 252, 202, 159, 209, 210, 3, 32, 394, 236];

/// The ClickHouse error code in an error's text, if any.
fn code(error: &Error) -> Option<u32> {
    let text = error.to_string();
    let at = text.find("Code: ")? + 6;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether the server refused the query for a reason that need not pass with time (a
/// view over its memory limit), rather than not answering or being away for a while.
pub fn is_refusal(error: &Error) -> bool {
    code(error).is_some_and(|code| !PASSING_CODES.contains(&code))
}

/// How many times in a row the server may refuse a repair before the sink gives it up.
const REFUSALS: usize = 5;

/// The server's refusals of a repair's queries in a row, and when the sink gives the
/// repair up: a query that cannot run at once, a refusal that repeats (a view over its
/// memory limit) after `REFUSALS`, so that it does not stop the table for good.
#[derive(Debug, Default)]
pub struct Refusals(usize);

impl Refusals {
    /// Whether the repair that failed with `error` is given up (counted as `failed` in
    /// `traffsure_sink_view_repairs_total` for `table`); otherwise a refusal is counted
    /// and the caller tries again.
    pub fn give_up(&mut self, table: &str, error: &Error) -> bool {
        if is_query_error(error) || (is_refusal(error) && self.0 >= REFUSALS) {
            metrics::view_repairs()
                .with_label_values(&[table, "", "failed"])
                .inc();
            self.0 = 0;
            return true;
        }
        if is_refusal(error) {
            self.0 += 1;
        }
        false
    }

    /// After a repair that could run: refusals count from zero again.
    pub fn reset(&mut self) {
        self.0 = 0;
    }
}

/// The rows one insert sent: per partition the lowest and highest offset, and how many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    pub ranges: BTreeMap<i32, (i64, i64)>,
    /// Per partition, how many rows.
    pub counts: BTreeMap<i32, u64>,
    /// When they were sent.
    pub at: Option<Instant>,
}

impl Sent {
    pub fn of(positions: impl Iterator<Item = (i32, i64)>) -> Self {
        let mut sent = Sent {
            at: Some(Instant::now()),
            ..Sent::default()
        };
        for (partition, offset) in positions {
            let range = sent.ranges.entry(partition).or_insert((offset, offset));
            range.0 = range.0.min(offset);
            range.1 = range.1.max(offset);
            *sent.counts.entry(partition).or_default() += 1;
        }
        sent
    }

    /// How many rows, over every partition.
    pub fn rows(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The rows of one partition of these.
    pub fn of_partition(&self, partition: i32) -> Sent {
        let mut one = Sent {
            at: self.at,
            ..Sent::default()
        };
        if let Some(range) = self.ranges.get(&partition) {
            let rows = self.counts.get(&partition).copied().unwrap_or_default();
            one.ranges.insert(partition, *range);
            one.counts.insert(partition, rows);
        }
        one
    }

    /// The condition on the raw table that selects exactly these rows: within a partition
    /// the sent rows are every stored row between their lowest and highest offset (rows
    /// stored earlier are at or below the checkpoint, hence below the lowest).
    fn condition(&self) -> String {
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|(p, (low, high))| {
                format!("(kafka_partition = {p} AND kafka_offset BETWEEN {low} AND {high})")
            })
            .collect();
        if parts.is_empty() {
            "0".into()
        } else {
            parts.join(" OR ")
        }
    }
}

/// A materialized view of the raw table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    name: String,
    target: String,
    /// The view's `SELECT`, its raw table replaced by `{rows}`.
    select: String,
}

impl View {
    fn over(&self, rows: &str) -> String {
        self.select.replace("{rows}", rows)
    }
}

/// Parses a view's `create_table_query` as ClickHouse stores it
/// (`CREATE MATERIALIZED VIEW db.v TO db.t (columns) AS SELECT … FROM db.raw …`).
/// (A current ClickHouse may break it over lines: a line break reads as a space.)
fn parse_view(name: &str, create: &str, database: &str, table: &str) -> Option<View> {
    let create = create.replace('\n', " ");
    let create = create.as_str();
    let after_to = &create[create.find(" TO ")? + 4..];
    let target = after_to.split_whitespace().next()?.replace('`', "");
    let select = &create[create.find(" AS SELECT ")? + 4..];
    let sources = [
        format!("{database}.{table}"),
        format!("`{database}`.`{table}`"),
        format!("`{table}`"),
        table.to_string(),
    ];
    for source in &sources {
        let pattern = format!(" FROM {source}");
        if let Some(at) = select.find(&pattern) {
            let end = at + pattern.len();
            let rest = &select[end..];
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                return Some(View {
                    name: name.to_string(),
                    target,
                    select: format!("{} FROM {{rows}}{rest}", &select[..at]),
                });
            }
        }
    }
    None
}

/// Whether a column type is an integer, summed exactly.
fn is_integer(column_type: &str) -> bool {
    let t = column_type.trim_start_matches('U');
    t.starts_with("Int") && t[3..].chars().all(|c| c.is_ascii_digit())
}

/// Per hour (or whatever the rollup's first key column is), the value columns' sums.
type Sums = BTreeMap<String, Vec<i128>>;

fn add(into: &mut Sums, from: &Sums, sign: i128) {
    for (key, values) in from {
        let entry = into
            .entry(key.clone())
            .or_insert_with(|| vec![0; values.len()]);
        for (e, v) in entry.iter_mut().zip(values) {
            *e += sign * v;
        }
    }
}

fn is_zero(sums: &Sums) -> bool {
    sums.values().all(|v| v.iter().all(|x| *x == 0))
}

/// The largest set of views (bit `i` = `contributions[i]`) whose parts add up to `gap`.
fn matching_views(gap: &Sums, contributions: &[Sums]) -> Option<u32> {
    let n = contributions.len().min(16);
    let mut best: Option<u32> = None;
    for mask in 0u32..(1 << n) {
        let mut sum = Sums::new();
        for (i, c) in contributions.iter().enumerate().take(n) {
            if mask & (1 << i) != 0 {
                add(&mut sum, c, 1);
            }
        }
        add(&mut sum, gap, -1);
        if is_zero(&sum) && best.is_none_or(|b| mask.count_ones() > b.count_ones()) {
            best = Some(mask);
        }
    }
    best
}

async fn sums(
    client: &Client,
    from: &str,
    key: &str,
    values: &[String],
    keys: Option<&BTreeSet<String>>,
) -> Result<Sums, Error> {
    let columns: Vec<String> = values
        .iter()
        .map(|v| format!("toString(sum({v}))"))
        .collect();
    let filter = match keys {
        Some(keys) if keys.is_empty() => return Ok(Sums::new()),
        Some(keys) => {
            let list: Vec<String> = keys.iter().map(|k| format!("'{k}'")).collect();
            format!("WHERE toString({key}) IN ({})", list.join(", "))
        }
        None => String::new(),
    };
    let sql = format!(
        "SELECT toString({key}) AS repair_key, arrayStringConcat([{}], ',') FROM {from} {filter} GROUP BY repair_key",
        columns.join(", ")
    );
    let rows: Vec<(String, String)> = client.query(&sql).fetch_all().await?;
    rows.into_iter()
        .map(|(key, values)| {
            let parsed: Result<Vec<i128>, _> = values.split(',').map(str::parse).collect();
            parsed
                .map(|v| (key, v))
                .map_err(|e| Error::Custom(format!("sum {values}: {e}")))
        })
        .collect()
}

/// The partition key of `table`, and its views in name order.
async fn views(client: &Client, table: &str) -> Result<(String, Vec<View>), Error> {
    let database: String = client.query("SELECT currentDatabase()").fetch_one().await?;
    let (names, partition_key): (Vec<String>, String) = client
        .query(
            "SELECT dependencies_table, partition_key FROM system.tables \
             WHERE database = currentDatabase() AND name = ?",
        )
        .bind(table)
        .fetch_one()
        .await?;
    let mut views = Vec::new();
    for name in names {
        let create: String = client
            .query(
                "SELECT create_table_query FROM system.tables \
                 WHERE database = currentDatabase() AND name = ?",
            )
            .bind(&name)
            .fetch_one()
            .await?;
        match parse_view(&name, &create, &database, table) {
            Some(view) => views.push(view),
            None => tracing::warn!(
                table,
                view = name,
                "cannot read the view's query; it is not repaired"
            ),
        }
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((partition_key.trim().to_string(), views))
}

fn outcome(table: &str, target: &str, result: &str) {
    metrics::view_repairs()
        .with_label_values(&[table, target, result])
        .inc();
}

/// Seconds the clocks of the sink and of ClickHouse may differ by.
const CLOCK_SKEW: u64 = 300;

/// A condition on `table` that keeps the partitions the sent rows can be in: those with
/// a part written since they were sent (a part holding them, or a merge of it, is that
/// new), so the lookups read a day of rows, not the table. "1" when the partitions
/// cannot be named that way (a key that is not one number).
async fn scope(
    client: &Client,
    table: &str,
    partition_key: &str,
    sent: &Sent,
) -> Result<String, Error> {
    if partition_key.is_empty() {
        return Ok("1".into());
    }
    let seconds = sent.at.map_or(0, |at| at.elapsed().as_secs()) + CLOCK_SKEW;
    let partitions: Vec<String> = client
        .query(
            "SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() \
             AND table = ? AND active AND modification_time >= now() - ?",
        )
        .bind(table)
        .bind(seconds)
        .fetch_all()
        .await?;
    if partitions
        .iter()
        .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return Ok("1".into());
    }
    if partitions.is_empty() {
        return Ok("0".into());
    }
    Ok(format!("({partition_key}) IN ({})", partitions.join(", ")))
}

/// After an insert of `sent` rows into `table` failed: completes the views of whatever of
/// it the table stored (see the module's comment). An error means it could not look
/// (the server is away): the caller tries again before its next insert.
pub async fn repair(client: &Client, table: &str, sent: &Sent) -> Result<(), Error> {
    repair_views(client, table, sent, Views::All).await
}

/// The repair of an insert another sink process sent and may not have lived to repair
/// (`markers`): as [`repair`], but a rollup's gap is written only once two looks half a
/// second apart find the same gap matching the same views. Such a check runs while
/// other inserts may write the same hours (this sink's, or a live sink's whose partition
/// moved): one caught between its raw part and its views' shows a passing gap, which
/// must not be taken for the marked insert's, however alike the two are.
pub async fn repair_after(client: &Client, table: &str, sent: &Sent) -> Result<(), Error> {
    repair_views(client, table, sent, Views::AllConfirmed).await
}

/// Completes only the checkpoint view's part of `sent` rows (of one partition, say):
/// unlike a rollup's, the checkpoint's part of a partition is found and written on its
/// own, and writing it twice is harmless (the checkpoint keeps the highest offset).
pub async fn repair_checkpoint_only(
    client: &Client,
    table: &str,
    sent: &Sent,
) -> Result<(), Error> {
    repair_views(client, table, sent, Views::CheckpointOnly).await
}

/// Which views a repair completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Views {
    All,
    /// All, a rollup's gap written only once seen twice.
    AllConfirmed,
    CheckpointOnly,
}

async fn repair_views(
    client: &Client,
    table: &str,
    sent: &Sent,
    which: Views,
) -> Result<(), Error> {
    if sent.rows() == 0 {
        return Ok(());
    }
    let (partition_key, views) = views(client, table).await?;
    let scope = scope(client, table, &partition_key, sent).await?;
    let condition = format!("{scope} AND ({})", sent.condition());
    let stored: u64 = client
        .query(&format!("SELECT count() FROM {table} WHERE {condition}"))
        .fetch_one()
        .await?;
    if stored == 0 {
        return Ok(());
    }
    if stored != sent.rows() {
        tracing::warn!(
            table,
            stored,
            sent = sent.rows(),
            "an insert failed with part of its rows stored; their views are not repaired"
        );
        outcome(table, "", "partial_raw");
        return Ok(());
    }
    let rows = format!("(SELECT * FROM {table} WHERE {condition})");
    let same_partitions = if partition_key.is_empty() {
        table.to_string()
    } else {
        format!(
            "(SELECT * FROM {table} WHERE ({partition_key}) IN \
             (SELECT DISTINCT {partition_key} FROM {table} WHERE {condition}))"
        )
    };
    let mut targets: BTreeMap<&str, Vec<&View>> = BTreeMap::new();
    for view in &views {
        targets.entry(&view.target).or_default().push(view);
    }
    let repairing = client.clone().with_setting("insert_deduplicate", "0");
    for (target, views) in targets {
        let bare = target.rsplit('.').next().unwrap_or(target);
        if bare == "sink_checkpoints" {
            repair_checkpoint(client, &repairing, table, sent, target, &views, &rows).await?;
        } else if which != Views::CheckpointOnly {
            let look = Look {
                rows: &rows,
                same_partitions: &same_partitions,
                confirm: which == Views::AllConfirmed,
            };
            repair_rollup(client, &repairing, table, target, &views, &look).await?;
        }
    }
    Ok(())
}

/// The checkpoint view's part landed when the checkpoint shows every sent partition's
/// highest offset.
async fn repair_checkpoint(
    client: &Client,
    repairing: &Client,
    table: &str,
    sent: &Sent,
    target: &str,
    views: &[&View],
    rows: &str,
) -> Result<(), Error> {
    let stored: Vec<(u16, u64)> = client
        .query(&format!(
            "SELECT kafka_partition, max(max_offset) FROM {target} WHERE source_table = ? \
             GROUP BY kafka_partition"
        ))
        .bind(table)
        .fetch_all()
        .await?;
    let stored: HashMap<i32, i64> = stored
        .into_iter()
        .map(|(p, o)| (i32::from(p), o as i64))
        .collect();
    let landed = sent
        .ranges
        .iter()
        .all(|(p, (_, high))| stored.get(p).is_some_and(|o| o >= high));
    if landed {
        return Ok(());
    }
    for view in views {
        insert_view(repairing, table, target, view, rows).await?;
    }
    outcome(table, target, "repaired");
    Ok(())
}

async fn insert_view(
    repairing: &Client,
    table: &str,
    target: &str,
    view: &View,
    rows: &str,
) -> Result<(), Error> {
    let columns: Vec<String> = repairing
        .query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ?")
        .bind(&view.name)
        .fetch_all()
        .await?;
    let columns = columns.join(", ");
    tracing::warn!(
        table,
        view = view.name,
        target,
        "an insert was cut before this view's part: writing it"
    );
    repairing
        .query(&format!(
            "INSERT INTO {target} ({columns}) SELECT {columns} FROM ({})",
            view.over(rows)
        ))
        .execute()
        .await
}

/// How many times a rollup whose gap matches no set of views is looked at again.
const LOOKS: usize = 5;

/// What a rollup's repair looks at: the sent rows, the raw partitions holding them, and
/// whether a gap is written only once seen twice.
struct Look<'a> {
    rows: &'a str,
    same_partitions: &'a str,
    confirm: bool,
}

async fn repair_rollup(
    client: &Client,
    repairing: &Client,
    table: &str,
    target: &str,
    views: &[&View],
    look_at: &Look<'_>,
) -> Result<(), Error> {
    let (rows, same_partitions) = (look_at.rows, look_at.same_partitions);
    let bare = target.rsplit('.').next().unwrap_or(target);
    let (engine, sorting_key): (String, String) = client
        .query(
            "SELECT engine, sorting_key FROM system.tables \
             WHERE database = currentDatabase() AND name = ?",
        )
        .bind(bare)
        .fetch_one()
        .await?;
    let keys: Vec<String> = sorting_key
        .split(',')
        .map(|k| k.trim().to_string())
        .collect();
    let columns: Vec<(String, String)> = client
        .query(
            "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = ?",
        )
        .bind(bare)
        .fetch_all()
        .await?;
    let values: Vec<String> = columns
        .into_iter()
        .filter(|(name, column_type)| is_integer(column_type) && !keys.contains(name))
        .map(|(name, _)| name)
        .collect();
    let Some(key) = keys
        .first()
        .filter(|_| engine.ends_with("SummingMergeTree"))
    else {
        tracing::warn!(
            table,
            target,
            engine,
            "not a rollup the sink can check; not repaired"
        );
        outcome(table, target, "unchecked");
        return Ok(());
    };
    if values.is_empty() {
        outcome(table, target, "unchecked");
        return Ok(());
    }
    let mut contributions = Vec::new();
    let mut hours = BTreeSet::new();
    for view in views {
        let part = sums(
            client,
            &format!("({})", view.over(rows)),
            key,
            &values,
            None,
        )
        .await?;
        hours.extend(part.keys().cloned());
        contributions.push(part);
    }
    // The gap and views matched on the previous look, when it must be seen twice.
    let mut seen: Option<(Sums, u32)> = None;
    for look in 0..LOOKS {
        let mut gap = Sums::new();
        for view in views {
            let truth = sums(
                client,
                &format!("({})", view.over(same_partitions)),
                key,
                &values,
                Some(&hours),
            )
            .await?;
            add(&mut gap, &truth, 1);
        }
        let current = sums(client, target, key, &values, Some(&hours)).await?;
        add(&mut gap, &current, -1);
        if is_zero(&gap) {
            return Ok(());
        }
        if let Some(mask) = matching_views(&gap, &contributions) {
            if look_at.confirm && seen.as_ref() != Some(&(gap.clone(), mask)) {
                seen = Some((gap, mask));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            for (i, view) in views.iter().enumerate() {
                if mask & (1 << i) != 0 && !contributions[i].is_empty() {
                    insert_view(repairing, table, target, view, rows).await?;
                }
            }
            outcome(table, target, "repaired");
            return Ok(());
        }
        tracing::info!(
            table,
            target,
            look,
            "the rollup's gap matches no set of this insert's views; looking again"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::error!(
        table,
        target,
        "the rollup's gap matches no set of this insert's views; left as it is"
    );
    outcome(table, target, "unresolved");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_rows_select_their_offsets_per_partition() {
        let sent = Sent::of([(1, 7), (0, 3), (1, 5), (0, 4)].into_iter());
        assert_eq!(sent.rows(), 4);
        assert_eq!(
            sent.condition(),
            "(kafka_partition = 0 AND kafka_offset BETWEEN 3 AND 4) OR \
             (kafka_partition = 1 AND kafka_offset BETWEEN 5 AND 7)"
        );
        assert_eq!(Sent::default().condition(), "0");
    }

    #[test]
    fn reads_a_stored_view_query() {
        let create = "CREATE MATERIALIZED VIEW db.conversions_hourly_previous_mv TO db.conversions_hourly ( hour DateTime('Etc/UTC'),  conversions Int64) AS SELECT toStartOfHour(created_at) AS hour, toInt64(-1) AS conversions FROM db.conversions  WHERE previous_status != ''";
        let view = parse_view(
            "conversions_hourly_previous_mv",
            create,
            "db",
            "conversions",
        )
        .expect("parsed");
        assert_eq!(view.target, "db.conversions_hourly");
        assert_eq!(
            view.over("(SELECT * FROM conversions WHERE 1)"),
            "SELECT toStartOfHour(created_at) AS hour, toInt64(-1) AS conversions FROM (SELECT * FROM conversions WHERE 1)  WHERE previous_status != ''"
        );
        // Bare names, as a single server stores them, and nothing after the table.
        let bare = "CREATE MATERIALIZED VIEW db.clicks_checkpoint_mv TO db.sink_checkpoints (x UInt8) AS SELECT 1 AS x FROM clicks";
        let view = parse_view("clicks_checkpoint_mv", bare, "db", "clicks").expect("parsed");
        assert_eq!(view.over("R"), "SELECT 1 AS x FROM R");
        // Over lines, as a current ClickHouse may write it.
        let lines = "CREATE MATERIALIZED VIEW db.v TO db.t\n(\n    `x` UInt8\n)\nAS SELECT 1 AS x\nFROM db.clicks\nWHERE 1";
        let view = parse_view("v", lines, "db", "clicks").expect("parsed");
        assert_eq!(view.target, "db.t");
        assert_eq!(view.over("R"), "SELECT 1 AS x FROM R WHERE 1");
        // Another table of a similar name is not the source.
        let other =
            "CREATE MATERIALIZED VIEW db.v TO db.t (x UInt8) AS SELECT 1 AS x FROM db.clicks_other";
        assert_eq!(parse_view("v", other, "db", "clicks"), None);
    }

    #[test]
    fn tells_refusals_from_passing_errors() {
        let memory = Error::BadResponse("Code: 241. DB::Exception: Memory limit".into());
        let read_only = Error::BadResponse("Code: 242, e.displayText() = read only".into());
        let syntax = Error::BadResponse("Code: 62. DB::Exception: Syntax error".into());
        assert!(is_refusal(&memory));
        assert!(!is_refusal(&read_only));
        assert!(!is_refusal(&Error::Custom("connection refused".into())));
        assert!(is_query_error(&syntax));
        assert!(!is_query_error(&memory));
        assert!(is_query_error(&Error::RowNotFound));
    }

    #[test]
    fn a_repair_is_given_up_on_a_query_error_or_a_refusal_that_repeats() {
        let memory = || Error::BadResponse("Code: 241. DB::Exception: Memory limit".into());
        let read_only = Error::BadResponse("Code: 242, e.displayText() = read only".into());
        let syntax = Error::BadResponse("Code: 62. DB::Exception: Syntax error".into());
        let mut refusals = Refusals::default();
        assert!(refusals.give_up("clicks", &syntax));
        for _ in 0..REFUSALS {
            assert!(!refusals.give_up("clicks", &memory()));
            // A server away for a while neither counts nor gives up.
            assert!(!refusals.give_up("clicks", &read_only));
        }
        assert!(refusals.give_up("clicks", &memory()));
        // Given up, the count starts over, as it does after a repair that ran.
        assert!(!refusals.give_up("clicks", &memory()));
        refusals.reset();
        for _ in 0..REFUSALS {
            assert!(!refusals.give_up("clicks", &memory()));
        }
        assert!(refusals.give_up("clicks", &memory()));
    }

    #[test]
    fn integer_columns_only() {
        assert!(is_integer("UInt64"));
        assert!(is_integer("Int32"));
        assert!(!is_integer("AggregateFunction(uniq, String)"));
        assert!(!is_integer("String"));
        assert!(!is_integer("Float64"));
        assert!(!is_integer("Interval"));
    }

    fn sums(rows: &[(&str, &[i128])]) -> Sums {
        rows.iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn finds_the_views_whose_parts_make_the_gap() {
        let plus = sums(&[("10:00", &[3, 250]), ("11:00", &[1, 0])]);
        let minus = sums(&[("10:00", &[-1, -100])]);
        let contributions = [plus.clone(), minus.clone()];
        // Both missing, only the second, none.
        let mut both = plus.clone();
        add(&mut both, &minus, 1);
        assert_eq!(matching_views(&both, &contributions), Some(0b11));
        assert_eq!(matching_views(&minus, &contributions), Some(0b10));
        assert_eq!(matching_views(&Sums::new(), &contributions), Some(0));
        // A gap no set of parts makes: nothing is written.
        let odd = sums(&[("10:00", &[2, 250])]);
        assert_eq!(matching_views(&odd, &contributions), None);
        // A view with no rows in the block matches either way: the largest set wins,
        // which writes nothing more.
        let empty = Sums::new();
        assert_eq!(matching_views(&plus, &[plus.clone(), empty]), Some(0b11));
    }
}
