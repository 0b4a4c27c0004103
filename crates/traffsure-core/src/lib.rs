//! The tracker's pure logic, shared by every service: click hashes, money amounts,
//! conversion status mapping, URL macros, IP blocks, the client address behind proxies,
//! the flow model, user agents and bots (uap-core's regexes and crawler patterns, handed
//! in by the caller), destination routing (rules and weighted rotation), and the
//! catalogue of traffic source and affiliate network templates.
//!
//! Nothing here does I/O; each piece is unit-tested on its own.

pub mod bots;
pub mod caps;
pub mod cidr;
pub mod click_hash;
pub mod client_ip;
pub mod cost;
pub mod error_body;
pub mod flow;
pub mod macros;
pub mod money;
pub mod objects;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod postback_params;
pub mod routing;
pub mod status;
pub mod templates;
pub mod ua_data;
pub mod user_agent;
pub mod visitor;
pub mod vocab;

pub use click_hash::{ClickHashError, ClickHashInfo, ClickHashKeys};
pub use error_body::ErrorBody;
pub use money::{format_micros, parse_micros, MoneyError};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
