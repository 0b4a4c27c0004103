//! What a user agent costs the edge: a cache miss (uap-core's regexes and the bot
//! patterns) against a hit of the per-thread cache, over user agents read one a line
//! from a file (bench/click.sh writes uap-core's corpus there).
//!
//! Usage: ua_parse_cost REGEXES_YAML CRAWLERS_JSON USER_AGENTS_TXT

use std::time::Instant;

use traffsure_core::ua_data::UaData;
use traffsure_core::user_agent::Parser;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [regexes, crawlers, agents] = &args[..] else {
        return Err("usage: ua_parse_cost REGEXES_YAML CRAWLERS_JSON USER_AGENTS_TXT".into());
    };
    let started = Instant::now();
    let parser = Parser::new(
        &std::fs::read_to_string(regexes)?,
        &std::fs::read_to_string(crawlers)?,
    )?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let text = std::fs::read_to_string(agents)?;
    let mut agents: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    agents.sort_unstable();
    agents.dedup();

    // Misses: every distinct user agent parsed once, as a cold cache would.
    let started = Instant::now();
    let mut bots = 0usize;
    for ua in &agents {
        bots += usize::from(parser.parse(ua).is_bot());
    }
    let miss_us = started.elapsed().as_secs_f64() * 1e6 / agents.len().max(1) as f64;

    // Hits: a working set smaller than the cache, looked up again and again.
    let data = UaData::new(parser);
    let hot: Vec<&str> = agents.iter().copied().take(1_000).collect();
    for ua in &hot {
        data.parse_cached(ua);
    }
    let rounds = 200;
    let (mut hits, started) = (0usize, Instant::now());
    for _ in 0..rounds {
        for ua in &hot {
            hits += usize::from(data.parse_cached(ua).1);
        }
    }
    let lookups = rounds * hot.len();
    let hit_us = started.elapsed().as_secs_f64() * 1e6 / lookups.max(1) as f64;

    println!("user agents: {} distinct ({bots} bots)", agents.len());
    println!("data load and compile: {load_ms:.0} ms");
    println!("miss (regex parse):    {miss_us:.2} µs per user agent");
    println!("hit (per-thread cache): {hit_us:.3} µs per user agent ({hits} of {lookups} hits)");
    Ok(())
}
