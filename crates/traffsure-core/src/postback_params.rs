//! The names a postback's parameters are read under: TraffSure's own first, then the
//! aliases networks send. postback-ingest reads a postback with them and the postback
//! log filters its stored parameters with the same lists.

/// Click hash: TraffSure, RedTrack, Affise, CAKE (`clickid`, `click_id`), Voluum, BeMob,
/// PeerClick (`cid`), Keitaro (`subid`), FunnelFlux (`hit`), Binom (`cnv_id`).
pub const CLICK: &[&str] = &[
    "click", "clickid", "click_id", "cid", "subid", "hit", "cnv_id",
];
/// Read as the click only when none of `CLICK` is sent: TUNE's and Everflow's own postback
/// URLs carry the click there, other dialects the advertiser's transaction.
pub const CLICK_OR_TRANSACTION: &str = "transaction_id";
/// Goal: Voluum (`et`), RedTrack (`type`).
pub const GOAL: &[&str] = &["goal", "event", "et", "type"];
/// Raw status: Binom (`cnv_status`).
pub const STATUS: &[&str] = &["status", "cnv_status"];
/// Revenue: Voluum, Keitaro, BeMob, PeerClick, Binom (`payout`), Affise, RedTrack (`sum`),
/// Everflow, CAKE (`amount`), FunnelFlux (`rev`).
pub const REVENUE: &[&str] = &["revenue", "payout", "sum", "amount", "rev"];
/// Currency: Binom (`cnv_currency`).
pub const CURRENCY: &[&str] = &["currency", "cnv_currency"];
/// Transaction: FunnelFlux (`tx`), Voluum, BeMob, PeerClick (`txid`), Affise (`action_id`),
/// Keitaro (`tid`), RedTrack (`rdtk_event_id`), CAKE (`unique_id`, `order_id`), Everflow
/// (`order_id`).
pub const UID: &[&str] = &[
    "uid",
    "tx",
    "txid",
    CLICK_OR_TRANSACTION,
    "action_id",
    "tid",
    "rdtk_event_id",
    "unique_id",
    "order_id",
];
/// Why a network rejected (or otherwise noted) a conversion, kept whatever the status: the
/// reason name, Affise (`comment`, shown as `notice` in its postback log; Affise Reach's
/// private `note` last), MyChips (`rejected_reason_id`), BitLabs (`ban_reason`), and the
/// spellings networks use for a decline.
pub const REASON: &[&str] = &[
    "reason",
    "rejection_reason",
    "rejected_reason",
    "reject_reason",
    "decline_reason",
    "rejected_reason_id",
    "ban_reason",
    "comment",
    "notice",
    "note",
];
/// Longest reason kept, in bytes; a longer one is refused.
pub const MAX_REASON_BYTES: usize = 255;
pub const VISITOR: &[&str] = &["vid"];
pub const FLOW: &[&str] = &["flow"];
pub const DISABLE_POSTBACKS: &[&str] = &["disable_postbacks"];
