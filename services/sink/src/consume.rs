//! The consume loop: reads the event topics, hands each message to its table, flushes
//! the tables on every message and tick, dead-letters what ClickHouse refused, and
//! stores a message's offset only once it is in a table (or on the dead-letter topic).
//! On a rebalance it forgets what it held of the partitions that moved; at shutdown it
//! gives the pending rows a bounded time to reach ClickHouse and commits.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use traffsure_kafka::rebalance::{
    self, Partitions, RebalanceContext, RebalanceEvent, RebalanceWait,
};

use crate::dead_letter::DeadLetters;
use crate::identity::TopicIdentity;
use crate::metrics;
use crate::shards::Shards;
use crate::table::{Accepted, InsertsInFlight};
use crate::tables::{CheckpointSources, Incoming, Tables};

/// How long a revocation waits for the inserts in flight before it lets the partitions
/// go: an insert still running after that (ClickHouse down) may race the new owner's.
const REVOKE_WAIT: Duration = Duration::from_secs(30);

/// How long a SIGTERM waits for the pending rows to reach ClickHouse.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(20);

/// The consumer context, and the partitions (topic, partition) revoked from or assigned
/// to this instance as the loop is to learn them.
///
/// Rebalance callbacks run inside the loop's poll, so a thread of its own answers them:
/// it hands the loop the partitions first, and lets a revocation go only once the
/// inserts in flight are done (at most `REVOKE_WAIT`), so the partition's next owner
/// reads a checkpoint that already counts them.
pub fn rebalances(
    inserts: Arc<InsertsInFlight>,
) -> std::io::Result<(RebalanceContext, UnboundedReceiver<Partitions>)> {
    let (context, mut events) = rebalance::channel(RebalanceWait::UpTo(REVOKE_WAIT));
    let (moved, moves) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("sink-rebalance".into())
        .spawn(move || {
            while let Some(event) = events.blocking_recv() {
                // Fails only once the loop is gone (shutting down): nothing left to forget.
                let _ = moved.send(event.partitions().clone());
                if matches!(event, RebalanceEvent::Revoked { .. })
                    && !inserts.wait_idle(REVOKE_WAIT)
                {
                    tracing::warn!("partitions revoked while an insert still runs");
                }
                event.done();
            }
        })?;
    Ok((context, moves))
}

/// Has the tables forget the partitions that moved since the loop last looked.
fn forget_moved_partitions(tables: &mut Tables, moves: &mut UnboundedReceiver<Partitions>) {
    while let Ok(moved) = moves.try_recv() {
        tables.forget_moved(moved);
    }
}

pub struct Sink {
    pub consumer: StreamConsumer<RebalanceContext>,
    pub moves: UnboundedReceiver<Partitions>,
    pub shards: Shards,
    pub identity: Arc<TopicIdentity>,
    pub inserts: Arc<InsertsInFlight>,
    pub tables: Tables,
    pub dead_letters: DeadLetters,
}

impl Sink {
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        // One listener for the whole run: a new one per message costs more than the
        // message, and a signal between two of them could be missed.
        let shutdown = traffsure_telemetry::shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                message = self.consumer.recv() => {
                    let message = match message {
                        Ok(m) => m,
                        Err(error) => {
                            tracing::warn!(%error, "consume failed");
                            continue;
                        }
                    };
                    forget_moved_partitions(&mut self.tables, &mut self.moves);
                    let (topic, partition, offset) = (message.topic().to_string(), message.partition(), message.offset());
                    let incoming = Incoming {
                        topic: &topic,
                        partition,
                        offset,
                        key: message.key().unwrap_or_default(),
                        payload: message.payload().unwrap_or_default(),
                    };
                    let at = CheckpointSources { shards: &self.shards, identity: &self.identity };
                    let Some((table, accepted)) = self.tables.accept_retrying(&at, &incoming).await else {
                        tracing::warn!(topic, partition, offset, "message from a topic the sink does not write");
                        continue;
                    };
                    if traffsure_telemetry::otlp_enabled() {
                        self.tables.observe_trace(&topic, message.headers());
                    }
                    let messages = metrics::messages();
                    match accepted {
                        Accepted::Row => messages.with_label_values(&[table, "row"]).inc(),
                        Accepted::AlreadyStored => messages.with_label_values(&[table, "already_stored"]).inc(),
                        Accepted::StoredUndecodable(message) => {
                            messages.with_label_values(&[table, "already_stored"]).inc();
                            let refused = crate::tables::RefusedMessage { topic: topic.clone(), table, message };
                            self.dead_letters.publish(&refused).await;
                        }
                        Accepted::Rewind { low } => {
                            drop(message);
                            if let Err(error) = self.consumer.seek(&topic, partition, Offset::Offset(low), Duration::from_secs(10)) {
                                // The partition is checked again on its next message.
                                tracing::warn!(topic, partition, %error, "cannot rewind a recreated partition, retrying");
                                self.tables.forget(&topic, partition);
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            continue;
                        }
                    }
                    self.flush(false).await?;
                }
                _ = tick.tick() => self.flush(false).await?,
                _ = &mut shutdown => {
                    // Pending rows get a bounded time to reach ClickHouse; if it cannot take
                    // them, they are left to Kafka (their offsets were never stored) and
                    // the next start writes them.
                    if tokio::time::timeout(SHUTDOWN_FLUSH, self.flush(true)).await.is_err() {
                        tracing::warn!("clickhouse did not take the pending rows before shutdown; they will be replayed");
                    }
                    self.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)?;
                    return Ok(());
                }
            }
        }
    }

    /// Flushes the tables (see `Tables::flush`), then dead-letters what ClickHouse
    /// refused and stores the offsets of every message now in a table, dead-lettered
    /// or a replay.
    async fn flush(&mut self, force: bool) -> anyhow::Result<()> {
        forget_moved_partitions(&mut self.tables, &mut self.moves);
        let flushed = self
            .tables
            .flush(&self.shards, &self.inserts, force)
            .await?;
        for refused in &flushed.refused {
            self.dead_letters.publish(refused).await;
        }
        if flushed.offsets.count() > 0 {
            // A partition revoked this very moment refuses the store; its new owner
            // resumes from the table's checkpoint, so this is not an error.
            if let Err(error) = self.consumer.store_offsets(&flushed.offsets) {
                tracing::warn!(%error, "offsets not stored");
            }
        }
        Ok(())
    }
}
