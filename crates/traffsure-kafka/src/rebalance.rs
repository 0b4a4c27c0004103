//! Rebalances handed to the service's own code on a channel, the one way every group
//! consumer of TraffSure learns that partitions moved.
//!
//! librdkafka calls the rebalance callbacks inside the consumer's poll. The context here
//! only turns each callback into a [`RebalanceEvent`] on a channel; the service decides
//! what a move means (wait for inserts in flight, read records back, abort a
//! transaction). With [`RebalanceWait::UpTo`] the callback then waits for the event's
//! reply, so work a revocation needs finishes before the partitions go and work an
//! assignment needs finishes before their first message is read. The reply must come
//! from another task or thread than the one polling the consumer: that one is inside the
//! callback. With [`RebalanceWait::No`] the callback returns at once, for a loop that polls
//! and then drains the events itself.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;

/// Whether a rebalance callback waits for the service's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceWait {
    /// Wait for the reply, at most this long (then go on with a warning).
    UpTo(Duration),
    /// Wait for the reply however long it takes (work that must not be cut short).
    UntilReply,
    /// Do not wait.
    No,
}

/// Releases the rebalance callback when sent or dropped.
#[derive(Debug)]
pub struct Reply(Option<std_mpsc::SyncSender<()>>);

impl Reply {
    /// Lets the callback return now.
    pub fn done(mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(());
        }
    }
}

/// Partitions (topic, partition) that moved.
pub type Partitions = Vec<(String, i32)>;

/// One rebalance step.
#[derive(Debug)]
pub enum RebalanceEvent {
    /// These partitions are being taken away; they go once `reply` is done.
    Revoked {
        partitions: Partitions,
        reply: Reply,
    },
    /// These partitions were assigned; their first message is read once `reply` is done.
    Assigned {
        partitions: Partitions,
        reply: Reply,
    },
}

impl RebalanceEvent {
    pub fn partitions(&self) -> &Partitions {
        match self {
            Self::Revoked { partitions, .. } | Self::Assigned { partitions, .. } => partitions,
        }
    }

    /// The partitions of one topic, by number.
    pub fn partitions_of(&self, topic: &str) -> Vec<i32> {
        self.partitions()
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| *p)
            .collect()
    }

    /// Releases the callback.
    pub fn done(self) {
        match self {
            Self::Revoked { reply, .. } | Self::Assigned { reply, .. } => reply.done(),
        }
    }
}

/// The consumer context that sends rebalance events.
pub struct RebalanceContext {
    events: mpsc::UnboundedSender<RebalanceEvent>,
    wait: RebalanceWait,
}

/// A context for a group consumer and the receiving end of its rebalance events.
pub fn channel(wait: RebalanceWait) -> (RebalanceContext, mpsc::UnboundedReceiver<RebalanceEvent>) {
    let (events, receiver) = mpsc::unbounded_channel();
    (RebalanceContext { events, wait }, receiver)
}

impl RebalanceContext {
    fn send(&self, list: &TopicPartitionList, revoked: bool) {
        let partitions: Partitions = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let (sender, receiver) = std_mpsc::sync_channel(1);
        let reply = Reply(Some(sender));
        let event = if revoked {
            RebalanceEvent::Revoked { partitions, reply }
        } else {
            RebalanceEvent::Assigned { partitions, reply }
        };
        if self.events.send(event).is_err() {
            return; // nobody listens any more: the service is stopping
        }
        let limit = match self.wait {
            RebalanceWait::No => return,
            RebalanceWait::UpTo(limit) => limit,
            // `recv_timeout` waits without a deadline when none can be computed.
            RebalanceWait::UntilReply => Duration::MAX,
        };
        let started = Instant::now();
        let wait = || receiver.recv_timeout(limit);
        // The callback runs inside the poll, often on a runtime thread: let the runtime
        // move its other tasks away while this one waits.
        let answer = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        // A dropped reply (`Disconnected`) also means the service is done with the event.
        if let Err(std_mpsc::RecvTimeoutError::Timeout) = answer {
            tracing::warn!(
                revoked,
                waited_ms = started.elapsed().as_millis() as u64,
                "rebalance went on before the service finished with it"
            );
        }
    }
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => self.send(list, true),
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.send(list, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_callback_returns_once_the_reply_is_done() {
        let (context, mut events) = channel(RebalanceWait::UpTo(Duration::from_secs(10)));
        let mut list = TopicPartitionList::new();
        list.add_partition("clicks", 3);
        list.add_partition("postbacks", 3);
        let answered = std::thread::spawn(move || {
            let event = events.blocking_recv().expect("an event");
            assert!(matches!(event, RebalanceEvent::Revoked { .. }));
            assert_eq!(event.partitions_of("clicks"), [3]);
            std::thread::sleep(Duration::from_millis(50));
            event.done();
        });
        let started = Instant::now();
        context.send(&list, true);
        assert!(started.elapsed() >= Duration::from_millis(50));
        answered.join().expect("the answering thread");
    }

    #[test]
    fn a_callback_that_does_not_wait_queues_the_event() {
        let (context, mut events) = channel(RebalanceWait::No);
        let mut list = TopicPartitionList::new();
        list.add_partition("clicks", 1);
        context.send(&list, false);
        let event = events.try_recv().expect("queued");
        assert!(matches!(event, RebalanceEvent::Assigned { .. }));
        assert_eq!(event.partitions(), &vec![("clicks".to_string(), 1)]);
    }
}
