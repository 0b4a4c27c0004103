//! The user-agent data a process parses with, replaceable while it runs, each thread's
//! cache of recent answers, and the one thread that parses what no cache holds.
//!
//! A regex parse costs tens of microseconds, a click a few; but traffic repeats a few
//! thousand browser builds over and over, so each thread keeps a two-way set-associative
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

/// Slots of each thread's cache (two per set), and the longest user agent it keeps.
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
                cache.slots.iter_mut().for_each(|slot| *slot = None);
            }
            let parser = match &cache.parser {
                Some(parser) => Arc::clone(parser),
                None => self.parser(),
            };
            if user_agent.len() > CACHE_MAX_LEN {
                return (Arc::new(self.parse(&parser, user_agent)), false);
            }
            // Two ways per set: two agents that hash alike do not evict each other on
            // every click; a miss replaces the way not used last.
            let set = slot_of(user_agent) & !1;
            for way in [set, set | 1] {
                if let Some((cached, parsed)) = &cache.slots[way] {
                    if **cached == *user_agent {
                        cache.last_used[set / 2] = way & 1 == 1;
                        return (Arc::clone(parsed), true);
                    }
                }
            }
            let victim = if cache.last_used[set / 2] {
                set
            } else {
                set | 1
            };
            cache.last_used[set / 2] = victim & 1 == 1;
            let parsed = Arc::new(self.parse(&parser, user_agent));
            cache.slots[victim] = Some((user_agent.into(), Arc::clone(&parsed)));
            (parsed, false)
        })
    }
}

fn slot_of(user_agent: &str) -> usize {
    use std::hash::Hasher as _;
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(user_agent.as_bytes());
    // The high bits of a multiplicative mix pick the slot.
    (hasher.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_SLOTS.trailing_zeros()))
        as usize
}

type CacheSlot = Option<(Box<str>, Arc<UserAgent>)>;

struct ThreadCache {
    generation: u64,
    parser: Option<Arc<Parser>>,
    /// Sets of two ways: slots `2n` and `2n + 1`.
    slots: Vec<CacheSlot>,
    /// Per set, whether its second way answered or was filled last.
    last_used: Vec<bool>,
}

thread_local! {
    static CACHE: std::cell::RefCell<ThreadCache> = std::cell::RefCell::new(ThreadCache {
        generation: 0,
        parser: None,
        slots: vec![None; CACHE_SLOTS],
        last_used: vec![false; CACHE_SLOTS / 2],
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
        // Enough distinct user agents that hundreds of sets get more than two, so slots
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
