-- Users of the admin panel and the API beside the configured first admin (the bootstrap
-- owner, who lives in settings, not here), and their API keys.
--
-- Every change writes a new version of the row (`version`, milliseconds); readers take
-- each user's and key's highest version with argMax, so a change, a deletion or a
-- revocation is seen by every reporting-api replica on its next request, before any
-- merge. `role` is owner, admin or analyst; `flow_ids` empty means every flow, otherwise
-- the only flows the user sees. `password_hash` is an argon2id PHC string.
CREATE TABLE IF NOT EXISTS users
(
    id UInt32,
    version UInt64,
    username String,
    role String,
    flow_ids Array(UInt32),
    password_hash String,
    deleted UInt8,
    created_at DateTime,
    updated_at DateTime
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id;

-- A user's API key is `ts_<key_id>_<secret>`: `key_id` (the prefix lists show) finds the
-- row, and the SHA-256 of the whole key is compared in constant time. The key itself
-- is shown once, when made, and stored nowhere.
CREATE TABLE IF NOT EXISTS user_api_keys
(
    key_id String,
    version UInt64,
    user_id UInt32,
    name String,
    key_sha256 String,
    revoked UInt8,
    created_at DateTime,
    updated_at DateTime
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_id;
