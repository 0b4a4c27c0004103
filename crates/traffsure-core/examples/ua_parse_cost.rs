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

    // Hits: a working set well inside the cache, looked up again and again.
    let data = UaData::new(parser);
    let hot: Vec<&str> = agents.iter().copied().take(256).collect();
    for ua in &hot {
        data.parse_cached(ua);
    }
    let rounds = 800;
    let (mut hits, started) = (0usize, Instant::now());
    for _ in 0..rounds {
        for ua in &hot {
            hits += usize::from(data.parse_cached(ua).1);
        }
    }
    let lookups = rounds * hot.len();
    let hit_us = started.elapsed().as_secs_f64() * 1e6 / lookups.max(1) as f64;

    // The hit rate of one worker under traffic like bench/click.sh's mix: 5,000 of the
    // agents, the n-th most common drawn with weight 1/n (Zipf).
    let mix: Vec<&str> = agents.iter().copied().step_by(3).take(5_000).collect();
    let cumulative: Vec<f64> = mix
        .iter()
        .enumerate()
        .scan(0.0, |sum, (i, _)| {
            *sum += 1.0 / (i + 1) as f64;
            Some(*sum)
        })
        .collect();
    let total = cumulative.last().copied().unwrap_or(1.0);
    let (mut state, mut mix_hits, draws) = (0x2545_F491_4F6C_DD1Du64, 0usize, 300_000);
    for _ in 0..draws {
        // xorshift: a fixed, dependency-free sequence of draws.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let r = (state >> 11) as f64 / (1u64 << 53) as f64 * total;
        let i = cumulative.partition_point(|c| *c < r).min(mix.len() - 1);
        mix_hits += usize::from(data.parse_cached(mix[i]).1);
    }

    println!("user agents: {} distinct ({bots} bots)", agents.len());
    println!("data load and compile: {load_ms:.0} ms");
    println!("miss (regex parse):    {miss_us:.2} µs per user agent");
    println!("hit (per-thread cache): {hit_us:.3} µs per user agent ({hits} of {lookups} hits)");
    println!(
        "zipf mix of {} agents, one worker: {:.2} % hits over {draws} clicks",
        mix.len(),
        100.0 * mix_hits as f64 / draws as f64
    );
    Ok(())
}
