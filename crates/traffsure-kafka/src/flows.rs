//! The flows every service needs, kept in memory from the compacted `flows` topic, and
//! the follower of a compacted topic that the objects registry shares.
//!
//! Each instance reads the whole topic from the beginning (no consumer group: every
//! instance needs every flow) and then follows it, so a change made in the reporting API
//! takes effect everywhere within the consumer's fetch latency.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use traffsure_config::KafkaSettings;
use traffsure_events::Flow;
use traffsure_telemetry::Health;

use crate::reader::PartitionReader;

/// How long the flows that existed at start may take to load before the follower gives
/// up on them (and the service never reports ready).
const LOAD_LIMIT: Duration = Duration::from_secs(600);

/// Looked up on every click: a fast hash rather than SipHash (the keys are flow ids and
/// slugs from the operator's own configuration, not chosen by visitors).
#[derive(Default)]
struct Flows {
    by_id: FxHashMap<u32, Arc<Flow>>,
    by_slug: FxHashMap<String, u32>,
}

/// The latest revision of every flow.
#[derive(Default)]
pub struct FlowRegistry {
    inner: RwLock<Flows>,
    /// Bumped after every stored change, so readers may cache what they resolved.
    version: AtomicU64,
    /// Whether the flows that existed at start are all in.
    loaded: Loaded,
}

/// Whether what a compacted topic held when the service started is all in memory.
#[derive(Default)]
pub(crate) struct Loaded {
    done: AtomicBool,
    notify: Notify,
}

impl Loaded {
    pub(crate) async fn wait(&self) {
        loop {
            // Created before the check, so a notification in between is not missed.
            let notified = self.notify.notified();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn set(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

impl FlowRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Flows> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until the flows that existed when the service started are all in memory.
    pub async fn loaded(&self) {
        self.loaded.wait().await
    }

    pub fn get(&self, id: u32) -> Option<Arc<Flow>> {
        self.read().by_id.get(&id).cloned()
    }

    /// Finds a flow by its numeric id or its slug.
    pub fn resolve(&self, id_or_slug: &str) -> Option<Arc<Flow>> {
        let flows = self.read();
        let id = match id_or_slug.parse::<u32>() {
            Ok(id) => id,
            Err(_) => *flows.by_slug.get(id_or_slug)?,
        };
        flows.by_id.get(&id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Flow>> {
        let mut flows: Vec<_> = self.read().by_id.values().cloned().collect();
        flows.sort_by_key(|f| f.id);
        flows
    }

    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `flow` unless a newer revision is already known. Returns whether it was stored.
    pub fn upsert(&self, mut flow: Flow) -> bool {
        traffsure_events::ShrinkToFit::shrink_to_fit(&mut flow);
        let mut flows = self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(old) = flows.by_id.get(&flow.id) {
            if old.revision > flow.revision {
                return false;
            }
            if old.slug != flow.slug && !old.slug.is_empty() {
                let old_slug = old.slug.clone();
                flows.by_slug.remove(&old_slug);
            }
        }
        if !flow.slug.is_empty() {
            flows.by_slug.insert(flow.slug.clone(), flow.id);
        }
        flows.by_id.insert(flow.id, Arc::new(flow));
        self.version.fetch_add(1, Ordering::Release);
        true
    }

    /// Changes whenever a flow is stored: what a reader resolved stays current while the
    /// version it saw then is still the version.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

/// Loads and follows the `flows` topic. The service's `flows` readiness component turns
/// ready once the flows that existed at start are all in memory (services report ready
/// only then), the moment `FlowRegistry::loaded` waits for.
pub async fn follow_flows(
    settings: &KafkaSettings,
    topic: &str,
    health: &Health,
) -> Result<Arc<FlowRegistry>, KafkaError> {
    let registry = Arc::new(FlowRegistry::new());
    let (on_message, on_loaded) = (registry.clone(), registry.clone());
    follow_compacted(
        settings,
        topic,
        health,
        "flows",
        move |flow: Flow| {
            let id = flow.id;
            if on_message.upsert(flow) {
                tracing::debug!(flow = id, "flow loaded");
            }
        },
        move || {
            tracing::info!(flows = on_loaded.len(), "flows loaded");
            on_loaded.loaded.set();
        },
    )
    .await?;
    Ok(registry)
}

/// Loads a compacted topic from the beginning and follows it, handing every decodable
/// message to `apply`; calls `on_loaded` and turns the readiness component `name` ready
/// once what the topic held at start is all in. The follower is a thread of its own: the
/// topics it reads change rarely, and a blocking reader keeps it simple.
pub(crate) async fn follow_compacted<M>(
    settings: &KafkaSettings,
    topic: &str,
    health: &Health,
    name: &'static str,
    mut apply: impl FnMut(M) + Send + 'static,
    on_loaded: impl FnOnce() + Send + 'static,
) -> Result<(), KafkaError>
where
    M: prost::Message + Default,
{
    let ready = health.register(name);
    let (settings, topic) = (settings.clone(), topic.to_string());
    let reader = tokio::task::spawn_blocking(move || PartitionReader::open_all(&settings, &topic))
        .await
        .map_err(|_| KafkaError::Canceled)??;
    let mut apply_message = move |message: &BorrowedMessage<'_>| match message
        .payload()
        .map(M::decode)
    {
        Some(Ok(event)) => apply(event),
        Some(Err(error)) => {
            tracing::warn!(topic = name, offset = message.offset(), %error, "skipping undecodable message")
        }
        None => {}
    };
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            follow(reader, name, &mut apply_message, || {
                ready.set_ready(true);
                on_loaded();
            })
        })
        .map_err(|_| KafkaError::Canceled)?;
    Ok(())
}

fn follow(
    mut reader: PartitionReader,
    name: &str,
    apply: &mut dyn FnMut(&BorrowedMessage<'_>),
    on_loaded: impl FnOnce(),
) {
    match reader.read_to_end(LOAD_LIMIT, |message| {
        apply(message);
        Ok(())
    }) {
        Ok(()) => on_loaded(),
        Err(error) => tracing::error!(topic = name, %error, "not loaded"),
    }
    loop {
        match reader.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => apply(&message),
            Some(Err(error)) => {
                tracing::warn!(topic = name, %error, "topic read failed");
                std::thread::sleep(Duration::from_millis(500));
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_revision_and_follows_slug_changes() {
        let registry = FlowRegistry::new();
        let flow = |revision, slug: &str| Flow {
            id: 5,
            revision,
            slug: slug.into(),
            ..Flow::default()
        };
        assert!(registry.upsert(flow(2, "old")));
        assert!(!registry.upsert(flow(1, "older")));
        assert!(registry.resolve("old").is_some());
        assert!(registry.upsert(flow(3, "new")));
        assert!(registry.resolve("old").is_none());
        assert_eq!(registry.resolve("new").map(|f| f.revision), Some(3));
        assert_eq!(registry.resolve("5").map(|f| f.revision), Some(3));
        assert!(registry.resolve("6").is_none());
    }
}
