//! The user-agent data a process parses with, replaceable while it runs, each thread's
//! cache of recent answers, and the one thread that parses what no cache holds.
//!
//! A regex parse costs tens of microseconds, a click a few; but traffic repeats a few
//! thousand browser builds over and over, so each thread keeps an eight-way set-associative
//! cache and a hit costs a hash and a compare or two. Replacing the data bumps a generation that every
//! thread checks with one atomic load, and a thread that sees it change empties its
//! cache. Reading files and deciding when to replace them is the caller's.
//!
//! Each compiled regex keeps match scratch space (lazy DFA states, backtracking sets) for
//! every thread that ran it at the same time as another, and never gives it back; over
//! uap-core's thousand regexes that is about 47 MiB per thread. With
//! [`UaData::with_parser_thread`] every miss is parsed on one thread of its own (the
//! asking thread waits for the answer, about the parse's own time), so that space
//! exists once whatever the number of HTTP workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, RwLock};

use crate::user_agent::{Parser, UserAgent};

/// Slots of each thread's cache (`WAYS` per set), and the longest user agent it keeps.
const CACHE_SLOTS: usize = 1 << 14;
const CACHE_MAX_LEN: usize = 512;

/// Generations are unique across every `UaData` of the process, so a thread's cache
/// never answers for data it was not filled from.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

struct Current {
    parser: Arc<Parser>,
    generation: u64,
}

/// A user agent for the parser thread, with the data the asking thread's cache is filled
/// from and where the answer goes.
struct Miss {
    parser: Arc<Parser>,
    user_agent: Box<str>,
    answer: mpsc::SyncSender<UserAgent>,
}

/// The parser in use.
pub struct UaData {
    current: RwLock<Current>,
    generation: AtomicU64,
    /// The parser thread's queue; `None` parses on the asking thread.
    misses: Option<mpsc::Sender<Miss>>,
}

impl UaData {
    /// Parses misses on the thread that asks (tests, tools).
    pub fn new(parser: Parser) -> Self {
        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        Self {
            current: RwLock::new(Current {
                parser: Arc::new(parser),
                generation,
            }),
            generation: AtomicU64::new(generation),
            misses: None,
        }
    }

    /// Parses every miss on one thread, `ua-parse`, which ends with the last clone of
    /// this data.
    pub fn with_parser_thread(parser: Parser) -> std::io::Result<Self> {
        let (queue, misses) = mpsc::channel::<Miss>();
        std::thread::Builder::new()
            .name("ua-parse".into())
            .spawn(move || {
                for miss in misses {
                    // The asking thread may have given up; nothing to do then.
                    let _ = miss.answer.send(miss.parser.parse(&miss.user_agent));
                }
            })?;
        Ok(Self {
            misses: Some(queue),
            ..Self::new(parser)
        })
    }

    /// Puts `parser` in use; every thread drops its cached answers on its next parse.
    pub fn replace(&self, parser: Parser) {
        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Current {
            parser: Arc::new(parser),
            generation,
        };
        self.generation.store(generation, Ordering::Release);
    }

    /// The parser in use now.
    pub fn parser(&self) -> Arc<Parser> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&current.parser)
    }

    /// A parse with `parser`, on the parser thread when there is one (and it still runs).
    fn parse(&self, parser: &Arc<Parser>, user_agent: &str) -> UserAgent {
        if let Some(queue) = &self.misses {
            let (answer, answered) = mpsc::sync_channel(1);
            let miss = Miss {
                parser: Arc::clone(parser),
                user_agent: user_agent.into(),
                answer,
            };
            if queue.send(miss).is_ok() {
                if let Ok(parsed) = answered.recv() {
                    return parsed;
                }
            }
        }
        parser.parse(user_agent)
    }

    /// Parses `user_agent` through this thread's cache: the answer, and whether it came
    /// from the cache. Memory stays bounded whatever clients send (at most 16,384 user
    /// agents of up to 512 bytes per thread; longer ones are parsed every time).
    pub fn parse_cached(&self, user_agent: &str) -> (Arc<UserAgent>, bool) {
        let generation = self.generation.load(Ordering::Acquire);
        CACHE.with_borrow_mut(|cache| {
            if cache.generation != generation || cache.parser.is_none() {
                let current = self.current.read().unwrap_or_else(|e| e.into_inner());
                cache.parser = Some(Arc::clone(&current.parser));
                cache.generation = current.generation;
                cache
                    .sets
                    .iter_mut()
                    .for_each(|set| *set = CacheSet::default());
                cache.slots.iter_mut().for_each(|slot| *slot = None);
            }
            if user_agent.len() > CACHE_MAX_LEN {
                let parser = cache.parser(self);
                return (Arc::new(self.parse(&parser, user_agent)), false);
            }
            let (set, tag) = set_and_tag(user_agent);
            cache.clock = cache.clock.wrapping_add(1);
            let clock = cache.clock;
            let ways = &mut cache.sets[set];
            for way in 0..WAYS {
                if ways.tags[way] != tag {
                    continue;
                }
                if let Some((cached, parsed)) = &cache.slots[set * WAYS + way] {
                    if **cached == *user_agent {
                        ways.used[way] = clock;
                        return (Arc::clone(parsed), true);
                    }
                }
            }
            // The way used longest ago (an empty one has never been used).
            let victim = (0..WAYS)
                .max_by_key(|&way| match ways.tags[way] {
                    0 => u32::MAX,
                    _ => clock.wrapping_sub(ways.used[way]),
                })
                .unwrap_or(0);
            ways.tags[victim] = tag;
            ways.used[victim] = clock;
            let parser = cache.parser(self);
            let parsed = Arc::new(self.parse(&parser, user_agent));
            cache.slots[set * WAYS + victim] = Some((user_agent.into(), Arc::clone(&parsed)));
            (parsed, false)
        })
    }
}

/// The set a user agent goes in, and its tag there: 32 bits of its hash, never 0 (an
/// empty way).
fn set_and_tag(user_agent: &str) -> (usize, u32) {
    use std::hash::Hasher as _;
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(user_agent.as_bytes());
    // The high bits of a multiplicative mix pick the set, the low ones make the tag.
    let mixed = hasher.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let set = (mixed >> (64 - SETS.trailing_zeros())) as usize;
    (set, (mixed as u32) | 1)
}

type CacheSlot = Option<(Box<str>, Arc<UserAgent>)>;

/// Each thread's cache is set-associative, `WAYS` ways per set: with two, traffic of a
/// few thousand distinct agents kept evicting about one agent in a hundred (three or more
/// agents hashed to a set); with eight such sets are rare (measured in BENCHMARKS.md).
const WAYS: usize = 8;
const SETS: usize = CACHE_SLOTS / WAYS;

/// One set's tags and last uses, in one cache line: a lookup compares the agent's tag
/// with eight and the text only where a tag matches.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct CacheSet {
    /// 0 for an empty way.
    tags: [u32; WAYS],
    /// The thread's lookup count when each way was last used.
    used: [u32; WAYS],
}

struct ThreadCache {
    generation: u64,
    parser: Option<Arc<Parser>>,
    sets: Vec<CacheSet>,
    /// Way `w` of set `s` is slot `s * WAYS + w`.
    slots: Vec<CacheSlot>,
    /// Lookups so far (wrapping): the age of a way is how many lookups ago it was used.
    clock: u32,
}

impl ThreadCache {
    /// The parser the cache is filled from (only a miss needs it: a hit touches no
    /// reference count the threads share).
    fn parser(&self, data: &UaData) -> Arc<Parser> {
        match &self.parser {
            Some(parser) => Arc::clone(parser),
            None => data.parser(),
        }
    }
}

thread_local! {
    static CACHE: std::cell::RefCell<ThreadCache> = std::cell::RefCell::new(ThreadCache {
        generation: 0,
        parser: None,
        sets: vec![CacheSet::default(); SETS],
        slots: vec![None; CACHE_SLOTS],
        clock: 0,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user_agent::installed_parser;

    fn installed() -> Parser {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.local/user-agents");
        let read =
            |name: &str| std::fs::read_to_string(format!("{dir}/{name}")).unwrap_or_default();
        Parser::new(&read("regexes.yaml"), &read("crawler-user-agents.json"))
            .unwrap_or_else(|e| panic!("installed user-agent data: {e}"))
    }

    fn data() -> UaData {
        UaData::new(installed())
    }

    #[test]
    fn cached_answers_match_parse() {
        answers_match_parse(&data());
    }

    #[test]
    fn the_parser_thread_answers_as_parse_does() {
        let data = UaData::with_parser_thread(installed()).unwrap_or_else(|e| panic!("{e}"));
        // Two asking threads at once, as two HTTP workers.
        std::thread::scope(|s| {
            let asking = [
                s.spawn(|| answers_match_parse(&data)),
                s.spawn(|| answers_match_parse(&data)),
            ];
            for thread in asking {
                thread
                    .join()
                    .unwrap_or_else(|_| panic!("asking thread failed"));
            }
        });
    }

    fn answers_match_parse(data: &UaData) {
        // Enough distinct user agents that some sets get more than their ways, so slots
        // are replaced, then all again: every answer must be the one `parse` gives, hit
        // or miss.
        let agents: Vec<String> = (0..6_000)
            .map(|i| match i % 4 {
                0 => format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{i}.0.0.0 Safari/537.36"),
                1 => format!("Mozilla/5.0 (iPhone; CPU iPhone OS 17_{i} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"),
                2 => format!("Googlebot/2.{i} (+http://www.google.com/bot.html)"),
                _ => "x".repeat(i % 700),
            })
            .collect();
        let mut hits = 0;
        for _ in 0..2 {
            for ua in &agents {
                let (parsed, hit) = data.parse_cached(ua);
                assert_eq!(*parsed, installed_parser().parse(ua), "{ua}");
                hits += usize::from(hit);
            }
        }
        assert!(hits > 0);
    }

    /// Data without regexes: a parse is cheap, so tests can look up many agents.
    fn plain() -> UaData {
        let regexes = "user_agent_parsers: []\nos_parsers: []\ndevice_parsers: []\n";
        UaData::new(Parser::new(regexes, "[]").unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn a_few_thousand_agents_stay_cached() {
        // Traffic of 5,000 distinct agents, seen twice: with two ways per set about one
        // in eight was evicted before its second visit (sets holding three or more).
        let data = plain();
        let agents: Vec<String> = (0..5_000).map(|i| format!("agent/{i} (test)")).collect();
        for ua in &agents {
            assert!(!data.parse_cached(ua).1, "{ua} was not looked up before");
        }
        let hits = agents.iter().filter(|ua| data.parse_cached(ua).1).count();
        assert!(
            hits * 100 >= agents.len() * 98,
            "{hits} of {} hit",
            agents.len()
        );
    }

    #[test]
    fn the_agent_used_last_is_kept() {
        // More agents than the cache holds, each followed by a hot one: the hot agent is
        // always the one used last in its set, so it is never the one replaced.
        let data = plain();
        let hot = "hot agent";
        data.parse_cached(hot);
        for i in 0..3 * CACHE_SLOTS {
            data.parse_cached(&format!("cold agent {i}"));
            assert!(data.parse_cached(hot).1, "evicted after {i} cold agents");
        }
        // And a cold one is gone: the cache stays bounded.
        assert!(!data.parse_cached("cold agent 0").1);
    }

    #[test]
    fn replaced_data_empties_every_cache() {
        let data = data();
        let ua = "curl/8.5.0";
        assert!(data.parse_cached(ua).0.is_bot());
        assert!(data.parse_cached(ua).1, "second parse is a hit");
        // Data without bot patterns: the cached bot answer must not survive.
        let regexes = "user_agent_parsers: []\nos_parsers: []\ndevice_parsers: []\n";
        let plain = Parser::new(regexes, "[]").unwrap_or_else(|e| panic!("{e}"));
        data.replace(plain);
        let (parsed, hit) = data.parse_cached(ua);
        // The headless markers are built in; the uap families are gone with the data.
        assert!(!hit);
        assert_eq!(parsed.browser_family, "Other");
    }
}
