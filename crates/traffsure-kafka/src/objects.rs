//! The traffic sources, affiliate networks, offers and landers, kept in memory from the
//! compacted `objects` topic (key `<kind>:<id>`), each object's newest revision.

use std::sync::{Arc, RwLock};

use rdkafka::error::KafkaError;
use rustc_hash::FxHashMap;
use traffsure_config::KafkaSettings;
use traffsure_events::{ObjectKind, TrackerObject};
use traffsure_telemetry::Health;

use crate::flows::{follow_compacted, Loaded};

/// The newest revision of every stored object.
#[derive(Default)]
pub struct ObjectRegistry {
    inner: RwLock<FxHashMap<(i32, u32), Arc<TrackerObject>>>,
    loaded: Loaded,
}

impl ObjectRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, FxHashMap<(i32, u32), Arc<TrackerObject>>> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until the objects that existed when the service started are all in memory.
    pub async fn loaded(&self) {
        self.loaded.wait().await
    }

    pub fn get(&self, kind: ObjectKind, id: u32) -> Option<Arc<TrackerObject>> {
        self.read().get(&(kind as i32, id)).cloned()
    }

    /// Every object of a kind, archived ones included, by id.
    pub fn all(&self, kind: ObjectKind) -> Vec<Arc<TrackerObject>> {
        let mut objects: Vec<_> = self
            .read()
            .iter()
            .filter(|((k, _), _)| *k == kind as i32)
            .map(|(_, o)| o.clone())
            .collect();
        objects.sort_by_key(|o| o.id);
        objects
    }

    /// The id a new object of this kind gets: one more than the highest ever stored
    /// (objects are archived, never deleted, so ids are never reused).
    pub fn next_id(&self, kind: ObjectKind) -> u32 {
        self.read()
            .keys()
            .filter(|(k, _)| *k == kind as i32)
            .map(|(_, id)| *id)
            .max()
            .unwrap_or_default()
            + 1
    }

    /// Stores `object` unless a newer revision is already known. Returns whether it was
    /// stored.
    pub fn upsert(&self, object: TrackerObject) -> bool {
        let mut objects = self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (object.kind, object.id);
        if objects
            .get(&key)
            .is_some_and(|old| old.revision > object.revision)
        {
            return false;
        }
        objects.insert(key, Arc::new(object));
        true
    }
}

/// Loads and follows the `objects` topic; the readiness component `objects` turns ready
/// once the objects that existed at start are all in memory.
pub async fn follow_objects(
    settings: &KafkaSettings,
    topic: &str,
    health: &Health,
) -> Result<Arc<ObjectRegistry>, KafkaError> {
    let registry = Arc::new(ObjectRegistry::new());
    let (on_message, on_loaded) = (registry.clone(), registry.clone());
    follow_compacted(
        settings,
        topic,
        health,
        "objects",
        move |object: TrackerObject| {
            on_message.upsert(object);
        },
        move || {
            tracing::info!("objects loaded");
            on_loaded.loaded.set();
        },
    )
    .await?;
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_revision_and_counts_ids_per_kind() {
        let registry = ObjectRegistry::new();
        let object = |kind: ObjectKind, id, revision| TrackerObject {
            kind: kind as i32,
            id,
            revision,
            ..TrackerObject::default()
        };
        assert_eq!(registry.next_id(ObjectKind::Offer), 1);
        assert!(registry.upsert(object(ObjectKind::Offer, 1, 2)));
        assert!(!registry.upsert(object(ObjectKind::Offer, 1, 1)));
        assert!(registry.upsert(object(ObjectKind::Offer, 3, 1)));
        assert!(registry.upsert(object(ObjectKind::Lander, 1, 1)));
        assert_eq!(registry.next_id(ObjectKind::Offer), 4);
        assert_eq!(registry.next_id(ObjectKind::Lander), 2);
        assert_eq!(registry.next_id(ObjectKind::TrafficSource), 1);
        assert_eq!(
            registry.get(ObjectKind::Offer, 1).map(|o| o.revision),
            Some(2)
        );
        let ids: Vec<u32> = registry
            .all(ObjectKind::Offer)
            .iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(ids, [1, 3]);
    }
}
