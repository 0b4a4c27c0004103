-- Admin sessions ended by a logout. Session cookies are signed tokens any reporting-api
-- replica verifies on its own; a logout records the session here and every replica
-- refuses a session found here. A row matters only until expires_at; monthly partitions
-- past it can be dropped (ALTER TABLE ... DROP PARTITION).
CREATE TABLE IF NOT EXISTS admin_session_revocations
(
    session_id String,
    username String,
    expires_at DateTime,
    revoked_at DateTime
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(expires_at)
ORDER BY session_id;
