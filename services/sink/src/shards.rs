//! The ClickHouse shards the sink writes to: one server per shard
//! (`clickhouse.shards`, or `clickhouse.url` alone), Kafka partition `p`'s rows to shard
//! `p mod N`. A partition's rows, its checkpoint and its insert blocks all live on one
//! shard, so the checkpoint argument (`table`) and the repair of a cut insert (`repair`)
//! hold per shard as on one server: a batch splits into one block per shard, each
//! inserted, checked and repaired on its own shard's server. Only the checkpoint read on
//! a partition's first message looks at every shard (`table::checkpoints_everywhere`): a
//! partition moved to another shard by a change of N left its checkpoint on the old one.

use std::sync::Arc;

use clickhouse::Client;

#[derive(Clone)]
pub struct Shards(Arc<[Client]>);

impl Shards {
    /// `clients`: one per shard, in the order of the cluster's shards (at least one).
    pub fn new(clients: Vec<Client>) -> Self {
        Self(clients.into())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The shard of Kafka partition `partition`: `partition mod N`.
    pub fn index(&self, partition: i32) -> usize {
        partition.rem_euclid(self.0.len().max(1) as i32) as usize
    }

    pub fn all(&self) -> &[Client] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_go_to_shard_p_mod_n() {
        let two = Shards::new(vec![Client::default(), Client::default()]);
        let placed: Vec<usize> = (0..5).map(|p| two.index(p)).collect();
        assert_eq!(placed, [0, 1, 0, 1, 0]);
        let one = Shards::new(vec![Client::default()]);
        assert!((0..5).all(|p| one.index(p) == 0));
        assert_eq!(two.len(), 2);
    }
}
