//! What the user-agent data holds in memory with the edge's allocator: the resident set
//! after loading the data, then after THREADS threads at once (as HTTP workers) have
//! looked up every distinct user agent of a file through their caches, the misses parsed
//! on each asking thread (`inline`) or on the one parser thread the edge uses
//! (`thread`). bench/click.sh's corpus (`ua_corpus` in bench/lib.sh) is the usual input.
//!
//! Usage: ua_memory REGEXES_YAML CRAWLERS_JSON USER_AGENTS_TXT [THREADS [inline|thread]]

use traffsure_core::ua_data::UaData;
use traffsure_core::user_agent::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `VmRSS` and `VmHWM` of this process, MiB.
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    format!(
        "RSS {:.1} MiB (peak {:.1} MiB)",
        kib("VmRSS:"),
        kib("VmHWM:")
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: ua_memory REGEXES_YAML CRAWLERS_JSON USER_AGENTS_TXT [THREADS [inline|thread]]";
    let [regexes, crawlers, agents, rest @ ..] = &args[..] else {
        return Err(usage.into());
    };
    let threads: usize = rest.first().map_or(Ok(2), |t| t.parse())?;
    let on_thread = match rest.get(1).map_or("thread", String::as_str) {
        "thread" => true,
        "inline" => false,
        _ => return Err(usage.into()),
    };
    println!("start: {}", rss());
    // Loaded on a thread that ends with the load, as the edge does (`user_agents.rs`).
    let (regexes, crawlers) = (
        std::fs::read_to_string(regexes)?,
        std::fs::read_to_string(crawlers)?,
    );
    let parser = std::thread::spawn(move || Parser::new(&regexes, &crawlers))
        .join()
        .map_err(|_| "the load thread panicked")??;
    println!("data loaded: {}", rss());
    let data = if on_thread {
        UaData::with_parser_thread(parser)?
    } else {
        UaData::new(parser)
    };
    let text = std::fs::read_to_string(agents)?;
    let mut agents: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    agents.sort_unstable();
    agents.dedup();
    println!("{} distinct user agents read: {}", agents.len(), rss());
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for thread in 0..threads {
            let (data, agents) = (&data, &agents);
            s.spawn(move || {
                // Each thread starts at its own place, so they run the same regexes at once.
                let start = thread * agents.len() / threads;
                let order = agents[start..].iter().chain(&agents[..start]);
                let bots = order.filter(|ua| data.parse_cached(ua).0.is_bot()).count();
                std::hint::black_box(bots);
            });
        }
    });
    println!(
        "looked up on {threads} threads ({}): {} in {:.1} s",
        if on_thread {
            "misses on the parser thread"
        } else {
            "misses parsed inline"
        },
        rss(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "regexes compiled on first use: {}",
        traffsure_core::user_agent::regexes_compiled()
    );
    Ok(())
}
