//! The user-agent data files (uap-core's regexes.yaml, crawler-user-agents' JSON list):
//! read at start, where a missing or broken file stops the edge, and read again whenever
//! either file's modification time changes, checked on a thread of its own. A file that
//! fails to load then keeps the data in use and is tried again on its next change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use traffsure_core::ua_data::UaData;
use traffsure_core::user_agent::Parser;

/// Where the data lives.
#[derive(Debug, Clone)]
pub struct UaFiles {
    pub regexes: PathBuf,
    pub crawlers: PathBuf,
}

impl UaFiles {
    /// An empty crawler path means no crawler list (uap-core's Spider devices still count).
    fn mtimes(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        let mtime = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        (mtime(&self.regexes), mtime(&self.crawlers))
    }

    /// Reads and compiles the data on a thread of its own that ends with the load: the
    /// YAML and JSON parses and the compilers' scratch are tens of MiB the allocator
    /// would otherwise keep resident in the calling thread's heap (measured in
    /// BENCHMARKS.md, "Click edge"); an ended thread's free pages go back to the system.
    fn parser(&self) -> anyhow::Result<Parser> {
        let files = self.clone();
        std::thread::Builder::new()
            .name("ua-data-load".into())
            .spawn(move || files.parse_files())
            .context("user-agent data load thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("user-agent data load failed"))?
    }

    fn parse_files(&self) -> anyhow::Result<Parser> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let crawlers = if self.crawlers.as_os_str().is_empty() {
            "[]".to_string()
        } else {
            read(&self.crawlers)?
        };
        let parser = Parser::new(&read(&self.regexes)?, &crawlers)?;
        for pattern in parser.bots().skipped() {
            tracing::warn!(pattern, "crawler pattern does not compile, left out");
        }
        Ok(parser)
    }
}

/// Loads the data; the edge does not start without it. Misses of the workers' caches are
/// parsed on one thread (`UaData::with_parser_thread`), so the regexes' match caches exist
/// once, not once per HTTP worker.
pub fn load(files: &UaFiles) -> anyhow::Result<Arc<UaData>> {
    let parser = files.parser()?;
    tracing::info!(
        regexes = %files.regexes.display(),
        crawlers = %files.crawlers.display(),
        "user-agent data loaded"
    );
    Ok(Arc::new(
        UaData::with_parser_thread(parser).context("user-agent parser thread")?,
    ))
}

/// Checks the files every `every` and puts changed data in use.
pub fn watch(data: Arc<UaData>, files: UaFiles, every: Duration) -> std::io::Result<()> {
    let mut seen = files.mtimes();
    std::thread::Builder::new()
        .name("ua-data-watch".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let now = files.mtimes();
            if now == seen {
                continue;
            }
            seen = now;
            match files.parser() {
                Ok(parser) => {
                    data.replace(parser);
                    tracing::info!(
                        regexes = %files.regexes.display(),
                        crawlers = %files.crawlers.display(),
                        "user-agent data reloaded"
                    );
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "user-agent data not reloaded, keeping the data in use");
                }
            }
        })
        .map(drop)
}

/// `traffsure_user_agent_cache_total` by result, the label values resolved once.
struct CacheLookups {
    hit: traffsure_telemetry::prometheus::IntCounter,
    miss: traffsure_telemetry::prometheus::IntCounter,
}

/// Counts one user-agent lookup of a worker's cache (a miss is a regex parse).
pub fn count_lookup(hit: bool) {
    static METRIC: std::sync::OnceLock<CacheLookups> = std::sync::OnceLock::new();
    let lookups = METRIC.get_or_init(|| {
        let total = traffsure_telemetry::counter_vec(
            "traffsure_user_agent_cache_total",
            "User-agent lookups of the edge's per-worker cache by result",
            &["result"],
        );
        CacheLookups {
            hit: total.with_label_values(&["hit"]),
            miss: total.with_label_values(&["miss"]),
        }
    });
    traffsure_telemetry::inc_local(if hit { &lookups.hit } else { &lookups.miss });
}
