//! The names a postback's parameters are read under: TraffSure's own first, then the
//! aliases networks send. postback-ingest reads a postback with them and the postback
//! log filters its stored parameters with the same lists.

pub const CLICK: &[&str] = &["click", "clickid", "click_id", "cid", "subid", "hit"];
pub const GOAL: &[&str] = &["goal", "event", "et"];
pub const STATUS: &[&str] = &["status"];
pub const REVENUE: &[&str] = &["revenue", "payout", "sum", "amount", "rev"];
pub const CURRENCY: &[&str] = &["currency"];
pub const UID: &[&str] = &["uid", "tx", "txid", "transaction_id", "action_id", "tid"];
pub const VISITOR: &[&str] = &["vid"];
pub const FLOW: &[&str] = &["flow"];
pub const DISABLE_POSTBACKS: &[&str] = &["disable_postbacks"];
