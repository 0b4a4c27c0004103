//! The audit log's one writer: every write handler records what it changed — who, when,
//! the object's kind and id, the action, and the object's JSON view before and after —
//! with `Entry::new(..).before(..).after(..).record(..)` once the change is made.
//!
//! Entries go straight into ClickHouse (`audit_log`, migration 24), awaited before the
//! handler answers: the change is already durable (in Kafka or ClickHouse) by then, so a
//! failed entry is retried a few times and, failing still, answered as 503 that says the
//! change was made but not logged, and logged as an error — never silently dropped. A
//! topic and the sink would add a second path to the same table without making the
//! entry any more certain than the change it follows. Reading the log is
//! `api::audit`'s.

use std::time::Duration;

use clickhouse::Client;
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;
use crate::users::Principal;

/// The kinds of objects changes are logged for.
pub const KINDS: &[&str] = &[
    "flow",
    "traffic_source",
    "affiliate_network",
    "offer",
    "lander",
    "user",
    "api_key",
    "exchange_rates",
    "outbound_postback",
];

/// The actions changes are logged as.
pub const ACTIONS: &[&str] = &[
    "create",
    "update",
    "delete",
    "archive",
    "unarchive",
    "revoke",
    "import",
    "replay",
    "test",
];

/// One change, built by the handler that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    kind: &'static str,
    id: String,
    action: &'static str,
    flow_id: u32,
    before: Option<Value>,
    after: Option<Value>,
}

fn json_of(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

impl Entry {
    pub fn new(kind: &'static str, id: impl ToString, action: &'static str) -> Self {
        debug_assert!(KINDS.contains(&kind) && ACTIONS.contains(&action));
        Self {
            kind,
            id: id.to_string(),
            action,
            flow_id: 0,
            before: None,
            after: None,
        }
    }

    /// The flow the change concerns, so users restricted to it see the entry.
    pub fn flow(mut self, flow_id: u32) -> Self {
        self.flow_id = flow_id;
        self
    }

    pub fn before(mut self, value: &impl Serialize) -> Self {
        self.before = Some(json_of(value));
        self
    }

    pub fn after(mut self, value: &impl Serialize) -> Self {
        self.after = Some(json_of(value));
        self
    }

    /// Writes the entry for `who`; retried, then a 503 naming what happened.
    pub async fn record(self, state: &AppState, who: &Principal) -> Result<(), ApiError> {
        self.record_in(&state.clickhouse, who).await
    }

    /// `record` with a ClickHouse client alone (for work outside a request).
    pub async fn record_in(self, clickhouse: &Client, who: &Principal) -> Result<(), ApiError> {
        let id = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 16]>());
        let text = |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
        let (before, after) = (text(&self.before), text(&self.after));
        let at_ms = traffsure_core::now_ms();
        let mut last = None;
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let insert = clickhouse
                .query(
                    "INSERT INTO audit_log (id, at, at_ms, user_id, username, role, via, \
                     object_kind, object_id, flow_id, action, before_json, after_json) \
                     SELECT ?, toDateTime(intDiv(?, 1000)), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?",
                )
                .bind(&id)
                .bind(at_ms)
                .bind(at_ms)
                .bind(who.user_id)
                .bind(&who.username)
                .bind(who.role.word())
                .bind(who.via.word())
                .bind(self.kind)
                .bind(&self.id)
                .bind(self.flow_id)
                .bind(self.action)
                .bind(&before)
                .bind(&after)
                .execute()
                .await;
            match insert {
                Ok(()) => return Ok(()),
                Err(error) => last = Some(error),
            }
        }
        let error = last.map(|e| e.to_string()).unwrap_or_default();
        tracing::error!(
            kind = self.kind,
            id = %self.id,
            action = self.action,
            username = %who.username,
            %error,
            "audit entry not written"
        );
        Err(ApiError::Unavailable(format!(
            "the {} {} was changed ({}) but its audit entry could not be written: {error}",
            self.kind, self.id, self.action
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_both_sides() {
        let entry = Entry::new("flow", 7, "update")
            .flow(7)
            .before(&serde_json::json!({"name": "a"}))
            .after(&serde_json::json!({"name": "b"}));
        assert_eq!(entry.id, "7");
        assert_eq!(entry.flow_id, 7);
        assert_eq!(entry.before.unwrap()["name"], "a");
        assert_eq!(entry.after.unwrap()["name"], "b");
        let created = Entry::new("user", 3, "create");
        assert!(created.before.is_none() && created.flow_id == 0);
    }
}
