-- Cost updates (docs/costs.md): the real spend of a flow over whole UTC hours
-- [from_ts, to_ts), optionally narrowed to clicks with given sub values (an empty value
-- matches any). Every update is kept, with who made it and when; reports spread the
-- newest update covering a click over that update's clicks, instead of the clicks' own
-- cost. `subs` holds sub1..sub10 in order.
CREATE TABLE IF NOT EXISTS cost_updates
(
    id String,
    flow_id UInt32,
    from_ts DateTime,
    to_ts DateTime,
    amount_micros Int64,
    currency String,
    sub_id String,
    source String,
    subs Array(String),
    created_at DateTime,
    created_at_ms Int64,
    created_by String
)
ENGINE = ReplacingMergeTree(created_at_ms)
PARTITION BY toYYYYMM(created_at)
ORDER BY (flow_id, id);
