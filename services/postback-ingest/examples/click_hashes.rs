//! Prints valid click hashes, one per line, for load tests and manual checks:
//! `click_hashes <count> <keys> <flow id>` with keys as in `TRAFFSURE__CLICK_HASH__KEYS`.
//! Hashes are dated now, spread over every routing key.

use anyhow::Context;
use traffsure_core::{now_ms, ClickHashKeys};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: click_hashes <count> <keys> <flow id>";
    let count: u32 = args.next().context(usage)?.parse().context("count")?;
    let keys = ClickHashKeys::parse(&args.next().context(usage)?, None).context("keys")?;
    let flow: u32 = args.next().context(usage)?.parse().context("flow id")?;
    let now = now_ms();
    for i in 0..count {
        println!("{}", keys.generate(now, flow, (i % 65_536) as u16));
    }
    Ok(())
}
