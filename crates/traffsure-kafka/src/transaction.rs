//! Kafka transactions for consume-transform-produce loops: a producer that knows whether
//! a transaction is open, and how a failed one is ended.
//!
//! A transaction that cannot commit is aborted; when the abort fails too (librdkafka can
//! answer an abort with a fatal INVALID_TXN_STATE) a new producer with the same
//! transactional id takes over, since initialising it aborts the old transaction on the
//! broker. Only fencing (another live producer took the id) is final. What the caller
//! consumed and what it keeps in memory is the caller's to roll back.
//!
//! librdkafka's `send_offsets_to_transaction` can block far past its timeout while the
//! consumer group's coordinator is down (librdkafka issues 5456 and 5511: the request's
//! timeout is never checked, and a coordinator whose broker left the metadata is never
//! looked up again); it took attribution ten minutes in a broker-kill test. So it runs on
//! a thread of its own, and a call that outlives its timeout fails the commit like any
//! other failure: the abort that follows cannot run beside the stuck call, so a new
//! producer takes the transactional id over, which fences the stuck one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::TopicPartitionList;

/// How long init, commit and abort may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long past `TIMEOUT` a `send_offsets_to_transaction` is waited for before it is
/// given up as stuck.
const STUCK_MARGIN: Duration = Duration::from_secs(5);

/// Whether a transactional error means another live producer took this transactional id:
/// that one does the work now, and this one must stop rather than fence it back.
pub fn is_fenced(error: &KafkaError) -> bool {
    error.rdkafka_error_code().is_some_and(is_fencing_code)
}

fn is_fencing_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
    )
}

/// Whether an error, or any error it was caused by, says this producer was fenced
/// (`TransactionError::Fenced`, or a Kafka error for which `is_fenced` holds).
pub fn caused_by_fencing(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(TransactionError::Fenced { .. }) = error.downcast_ref::<TransactionError>() {
            return true;
        }
        if error.downcast_ref::<KafkaError>().is_some_and(is_fenced) {
            return true;
        }
        next = error.source();
    }
    false
}

/// Whether a delivery error only says an aborted transaction purged the event: nothing
/// was lost.
pub fn is_purged(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
    )
}

/// How a transaction ended without committing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// No transaction was open.
    NoneOpen,
    Aborted,
    /// The abort failed and a new producer with the same transactional id took over.
    ProducerReplaced,
}

#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// Another live producer took the transactional id: this one must stop.
    #[error("{operation} transaction")]
    Fenced {
        operation: &'static str,
        #[source]
        error: KafkaError,
    },
    /// The transaction did not commit and was ended by `abort`: nothing of it is visible
    /// to committed readers, and the consumed positions did not move.
    #[error("commit transaction")]
    Failed {
        #[source]
        error: KafkaError,
        abort: Abort,
    },
    #[error("create the transactional producer")]
    Create(#[source] KafkaError),
    #[error("init transactions")]
    Init(#[source] KafkaError),
}

/// A transactional producer and whether a transaction is open on it.
pub struct TransactionalProducer<C: ProducerContext + 'static> {
    config: ClientConfig,
    new_context: Box<dyn Fn() -> C + Send>,
    /// Shared with a `send_offsets_to_transaction` running on its own thread.
    producer: Arc<BaseProducer<C>>,
    /// When the open transaction began; none while no transaction is open.
    opened: Option<Instant>,
}

impl<C: ProducerContext + 'static> TransactionalProducer<C> {
    /// Creates the producer with `transactional_id` and initialises it, which fences any
    /// earlier producer with that id and aborts its open transaction. Each producer gets
    /// a fresh context from `new_context`. Blocking.
    pub fn new(
        mut config: ClientConfig,
        transactional_id: &str,
        new_context: impl Fn() -> C + Send + 'static,
    ) -> Result<Self, TransactionError> {
        config.set("transactional.id", transactional_id);
        let producer = Self::create(&config, &new_context)?;
        Ok(Self {
            config,
            new_context: Box::new(new_context),
            producer: Arc::new(producer),
            opened: None,
        })
    }

    fn create(
        config: &ClientConfig,
        new_context: &dyn Fn() -> C,
    ) -> Result<BaseProducer<C>, TransactionError> {
        let producer: BaseProducer<C> = config
            .create_with_context(new_context())
            .map_err(TransactionError::Create)?;
        producer
            .init_transactions(TIMEOUT)
            .map_err(TransactionError::Init)?;
        Ok(producer)
    }

    /// The producer, to send into the open transaction and serve its delivery reports.
    pub fn producer(&self) -> &BaseProducer<C> {
        &self.producer
    }

    /// Whether librdkafka has marked this producer fenced. A fence is learnt from the
    /// coordinator's answer to a request the producer made in the background (adding a
    /// partition to the transaction), so what fails next need not say why: an event
    /// queued after it fails with `_FATAL` or `_STATE`, not `_FENCED`.
    pub fn fenced(&self) -> bool {
        self.producer
            .client()
            .fatal_error()
            .is_some_and(|(code, _)| is_fencing_code(code))
    }

    pub fn is_open(&self) -> bool {
        self.opened.is_some()
    }

    /// How long the open transaction has been open.
    pub fn age(&self) -> Option<Duration> {
        self.opened.map(|opened| opened.elapsed())
    }

    /// Opens a transaction unless one is open; true when this call opened it.
    pub fn begin(&mut self) -> Result<bool, KafkaError> {
        if self.opened.is_some() {
            return Ok(false);
        }
        self.producer.begin_transaction()?;
        self.opened = Some(Instant::now());
        Ok(true)
    }

    /// Commits the open transaction with the consumer positions `offsets` of the group
    /// `group`. A transaction that fails to commit is aborted (see `abort`) and reported
    /// as `Failed`, unless the producer was fenced. Either way no transaction is open
    /// afterwards.
    pub fn commit(
        &mut self,
        offsets: &TopicPartitionList,
        group: Option<ConsumerGroupMetadata>,
    ) -> Result<(), TransactionError> {
        if self.opened.is_none() {
            return Ok(());
        }
        let Err(error) = self.commit_offsets(offsets, group) else {
            self.opened = None;
            return Ok(());
        };
        if is_fenced(&error) {
            self.opened = None;
            return Err(TransactionError::Fenced {
                operation: "commit",
                error,
            });
        }
        let abort = self.abort()?;
        Err(TransactionError::Failed { error, abort })
    }

    fn commit_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: Option<ConsumerGroupMetadata>,
    ) -> Result<(), KafkaError> {
        if offsets.count() > 0 {
            let group = group.ok_or(KafkaError::ConsumerCommit(RDKafkaErrorCode::State))?;
            self.send_offsets(offsets.clone(), group, TIMEOUT + STUCK_MARGIN)?;
        }
        self.producer.commit_transaction(TIMEOUT)
    }

    /// `send_offsets_to_transaction` on a thread of its own, waited for `wait` at most:
    /// a call still running then fails with `OperationTimedOut` and is left to end on its
    /// own (its producer is replaced by the abort that follows, which fences it).
    fn send_offsets(
        &self,
        offsets: TopicPartitionList,
        group: ConsumerGroupMetadata,
        wait: Duration,
    ) -> Result<(), KafkaError> {
        let producer = Arc::clone(&self.producer);
        let (done, result) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("txn-offsets".into())
            .spawn(move || {
                let _ = done.send(producer.send_offsets_to_transaction(&offsets, &group, TIMEOUT));
            })
            .map_err(|_| KafkaError::ConsumerCommit(RDKafkaErrorCode::Fail))?;
        match result.recv_timeout(wait) {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    wait_s = wait.as_secs(),
                    "sending the consumed offsets to the transaction is stuck (group coordinator down), giving the transaction up"
                );
                Err(KafkaError::ConsumerCommit(
                    RDKafkaErrorCode::OperationTimedOut,
                ))
            }
        }
    }

    /// Aborts the open transaction. When the abort itself fails, a new producer with the
    /// same transactional id takes over: initialising it aborts the old transaction on
    /// the broker. Only a fenced producer is an error here (or one that cannot be
    /// replaced).
    pub fn abort(&mut self) -> Result<Abort, TransactionError> {
        if self.opened.take().is_none() {
            return Ok(Abort::NoneOpen);
        }
        let Err(error) = self.abort_transaction() else {
            return Ok(Abort::Aborted);
        };
        if is_fenced(&error) {
            return Err(TransactionError::Fenced {
                operation: "abort",
                error,
            });
        }
        tracing::warn!(%error, "abort failed, replacing the producer");
        self.take_over(1)?;
        Ok(Abort::ProducerReplaced)
    }

    /// Drops the producer (its open transaction, if any, with it) and takes the
    /// transactional id over with a new one: initialising it makes the coordinator abort
    /// whatever the old producer left open and gives the id a new epoch. For a producer
    /// fenced without another live owner of the id: the coordinator aborted a transaction
    /// that outlived `transaction.timeout.ms` (its broker died and the coordination
    /// moved) and bumped the epoch. Initialisation is tried `attempts` times while the
    /// coordinator is not reachable.
    pub fn take_over(&mut self, attempts: u32) -> Result<(), TransactionError> {
        self.opened = None;
        let mut attempt = 1;
        loop {
            match Self::create(&self.config, &self.new_context) {
                Ok(producer) => {
                    self.producer = Arc::new(producer);
                    return Ok(());
                }
                Err(TransactionError::Init(error)) if attempt < attempts && !is_fenced(&error) => {
                    tracing::warn!(%error, attempt, "init transactions failed, trying again");
                    attempt += 1;
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Serves delivery reports between short attempts: an abort waits for the purged
    /// events' reports, and a timed-out abort may be resumed.
    fn abort_transaction(&self) -> Result<(), KafkaError> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.producer.abort_transaction(Duration::from_millis(500)) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && Instant::now() < deadline =>
                {
                    self.producer.poll(Duration::from_millis(50));
                }
                Err(error) => return Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::DefaultProducerContext;

    use super::*;

    /// A producer that was never initialised (no broker is asked), to test what does
    /// not reach one.
    fn uninitialised() -> TransactionalProducer<DefaultProducerContext> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("transactional.id", "test");
        TransactionalProducer {
            producer: Arc::new(
                config
                    .create_with_context(DefaultProducerContext)
                    .expect("producer"),
            ),
            config,
            new_context: Box::new(|| DefaultProducerContext),
            opened: None,
        }
    }

    #[test]
    fn purged_events_of_an_aborted_transaction_are_not_losses() {
        let purged = KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue);
        let in_flight = KafkaError::MessageProduction(RDKafkaErrorCode::PurgeInflight);
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(is_purged(&purged));
        assert!(is_purged(&in_flight));
        assert!(!is_purged(&timed_out));
    }

    #[test]
    fn only_fencing_is_final() {
        for code in [
            RDKafkaErrorCode::Fenced,
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::InvalidProducerEpoch,
        ] {
            assert!(is_fenced(&KafkaError::MessageProduction(code)), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::InvalidTransactionalState,
            RDKafkaErrorCode::State,
            RDKafkaErrorCode::OperationTimedOut,
        ] {
            assert!(!is_fenced(&KafkaError::MessageProduction(code)), "{code:?}");
        }
    }

    #[test]
    fn fencing_is_found_through_contexts() {
        use anyhow::Context;
        let fenced = KafkaError::MessageProduction(RDKafkaErrorCode::Fenced);
        let wrapped: anyhow::Result<()> = Err(TransactionError::Fenced {
            operation: "abort",
            error: fenced.clone(),
        })
        .context("rebalance");
        assert!(caused_by_fencing(&*wrapped.expect_err("an error")));
        let queued: anyhow::Result<()> = Err(fenced).context("queue event");
        assert!(caused_by_fencing(&*queued.expect_err("an error")));
        let failed = TransactionError::Failed {
            error: KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure),
            abort: Abort::Aborted,
        };
        assert!(!caused_by_fencing(&failed));
        let other: anyhow::Error = anyhow::anyhow!("state file unreadable");
        assert!(!caused_by_fencing(&*other));
    }

    #[test]
    fn nothing_open_nothing_to_end() {
        let mut producer = uninitialised();
        assert!(!producer.is_open());
        assert_eq!(producer.age(), None);
        assert!(producer.commit(&TopicPartitionList::new(), None).is_ok());
        assert_eq!(producer.abort().ok(), Some(Abort::NoneOpen));
        assert!(!producer.is_open());
    }

    #[test]
    fn a_failed_begin_leaves_no_transaction_open() {
        let mut producer = uninitialised();
        assert!(producer.begin().is_err());
        assert!(!producer.is_open());
    }

    #[test]
    fn begin_is_a_no_op_while_open() {
        let mut producer = uninitialised();
        let opened = Instant::now();
        producer.opened = Some(opened);
        assert!(matches!(producer.begin(), Ok(false)));
        assert_eq!(producer.opened, Some(opened));
    }
}
