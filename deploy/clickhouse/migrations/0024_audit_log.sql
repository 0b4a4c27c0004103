-- The audit log: one row per change made through the API (flows, objects, users, API
-- keys, exchange rates, replays, test postbacks), written by reporting-api before it
-- answers. `before_json` and `after_json` are the changed thing's JSON view ('' when
-- it did not exist before or after); `flow_id` is the flow the change concerns (0 for
-- none), so a user restricted to some flows reads only their entries. Kept whole;
-- monthly partitions can be dropped (ALTER TABLE ... DROP PARTITION) when older
-- entries no longer matter.
CREATE TABLE IF NOT EXISTS audit_log
(
    id String,
    at DateTime,
    at_ms Int64,
    user_id UInt32,
    username String,
    role String,
    via String,
    object_kind String,
    object_id String,
    flow_id UInt32,
    action String,
    before_json String,
    after_json String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (at, id);
