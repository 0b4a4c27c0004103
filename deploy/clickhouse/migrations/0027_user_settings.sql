-- Each user's own settings, for every user: the stored ones (`user_id` their id) and the
-- configured first admin, the bootstrap owner (`user_id` 0), who has no row in `users`.
-- `timezone` is the IANA zone the panel reads days and hours in for this user ('' or no
-- row: UTC). Every change writes a new version; readers take each user's highest
-- version with argMax (`user_settings_current` in queries.sql), as for `users`.
CREATE TABLE IF NOT EXISTS user_settings
(
    user_id UInt32,
    version UInt64,
    timezone String,
    updated_at DateTime
)
ENGINE = ReplacingMergeTree(version)
ORDER BY user_id;
