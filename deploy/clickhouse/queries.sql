-- Every query shape the services run, by name. The services load them from here
-- (traffsure_clickhouse::queries), and the tests run each one, with the example values
-- below, on ClickHouse 18.16 and on a current ClickHouse (chdb), so a shape that only one
-- of them accepts fails a test. `{table}` is replaced by each table listed under
-- `tables:`, `?` by the values under `example:` (bound values in the services).

-- name: checkpoints
-- tables: sink_checkpoints
-- example: 'clicks'
SELECT kafka_partition AS partition, max_offset, fingerprint FROM {table} WHERE source_table = ? ORDER BY kafka_partition, written_at DESC, max_offset DESC LIMIT 1 BY kafka_partition;

-- name: insert_marker
-- tables: sink_inserts
-- example: 'clicks', 0
SELECT source_table, kafka_partition, insert_id, writer, partitions, low_offsets, high_offsets, row_counts, toUInt32(written_at) FROM {table} WHERE source_table = ? AND kafka_partition = ? ORDER BY insert_id DESC LIMIT 1;

-- name: last_insert_of_writer
-- tables: sink_inserts
-- example: 'clicks', 'host:1:2'
SELECT max(insert_id) FROM {table} WHERE source_table = ? AND writer = ?;

-- name: table_partitions
-- tables: clicks
-- example: 'clicks'
SELECT DISTINCT partition FROM system.parts WHERE database = currentDatabase() AND table = ? AND active ORDER BY partition;

-- name: drop_partition
-- tables: clicks
-- example: 19700101
ALTER TABLE {table} DROP PARTITION ?;

-- name: clicks_by_hour
-- tables: clicks_hourly
-- example: toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT hour, flow_id, sum(clicks) AS clicks, sum(bots) AS bots, uniqMerge(unique_clicks) AS unique_clicks, sum(cost_micros) AS cost_micros FROM {table} WHERE hour >= ? AND hour < ? GROUP BY hour, flow_id ORDER BY hour, flow_id;

-- name: conversions_by_status
-- tables: conversions_hourly
-- example: toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT flow_id, goal, status, sum(conversions) AS conversions, sum(revenue_micros) AS revenue_micros FROM {table} WHERE hour >= ? AND hour < ? GROUP BY flow_id, goal, status HAVING conversions != 0 OR revenue_micros != 0 ORDER BY flow_id, goal, status;

-- name: clicks_from_raw
-- tables: clicks
-- example: toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT toStartOfHour(ts) AS hour, flow_id, count() AS clicks, sum(toUInt64(is_bot)) AS bots, uniq(visitor_id) AS unique_clicks, sum(cost_micros) AS cost_micros FROM {table} WHERE ts >= ? AND ts < ? GROUP BY hour, flow_id ORDER BY hour, flow_id;

-- name: conversions_current
-- tables: conversions
-- example: toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT flow_id, goal, status, toInt64(count()) AS conversions, sum(revenue_micros) AS revenue_micros FROM (SELECT conversion_id, argMax(flow_id, version) AS flow_id, argMax(goal, version) AS goal, argMax(status, version) AS status, argMax(revenue_micros, version) AS revenue_micros FROM {table} WHERE created_at >= ? AND created_at < ? GROUP BY conversion_id) GROUP BY flow_id, goal, status ORDER BY flow_id, goal, status;

-- name: exchange_rates_for_days
-- tables: exchange_rates
-- example: '2026-03-03', '2026-03-02', '2026-03-02'
SELECT toString(day) AS d, base, currency, argMax(rate, updated_at) AS r FROM {table} WHERE day <= toDate(?) AND (day >= toDate(?) OR (base, currency, day) IN (SELECT base, currency, max(day) FROM {table} WHERE day < toDate(?) GROUP BY base, currency)) GROUP BY day, base, currency ORDER BY day, base, currency;

-- name: conversions_by_day_and_currency
-- tables: conversions_hourly_currency
-- example: 'approved', 'approved', toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT [toString(flow_id)] AS keys, toString(toDate(hour, 'UTC')) AS d, currency AS cur, toInt64(sumIf(conversions, status = ?)) AS a, toInt64(sumIf(revenue_micros, status = ?)) AS rev FROM {table} WHERE hour >= ? AND hour < ? GROUP BY keys, d, cur ORDER BY keys, d, cur;

-- name: costs_by_day_and_currency
-- tables: clicks_cost_hourly
-- example: toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT [toString(flow_id)] AS keys, toString(toDate(hour, 'UTC')) AS d, cost_currency AS cur, toInt64(sum(cost_micros)) AS cost FROM {table} WHERE hour >= ? AND hour < ? GROUP BY keys, d, cur ORDER BY keys, d, cur;

-- name: rate_days_of_range
-- tables: exchange_rates
-- example: '2026-03-01 00:00:00', '2026-03-07 23:59:59'
SELECT toString(toDate(toDateTime(?)) - 1), toString(toDate(toDateTime(?)) + 1);

-- name: object_names
-- tables: tracker_objects
-- example:
SELECT kind, id, argMax(name, revision) AS n FROM {table} GROUP BY kind, id ORDER BY kind, id;

-- name: funnel_by_object
-- tables: clicks_funnel_hourly
-- example: toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT [toString(traffic_source_id), toString(offer_id)] AS keys, toInt64(sumIf(clicks - bots, kind != 1)) AS c, toInt64(sumIf(clicks - bots, kind != 1 AND lander_id != 0)) AS lv, toInt64(sumIf(clicks - bots, kind = 1)) AS lc, toInt64(sumIf(clicks - bots, kind = 1 OR (lander_id = 0 AND offer_id != 0))) AS oc, toInt64(sumIf(bots, kind != 1)) AS b, toUInt64(uniqMergeIf(unique_clicks, kind != 1)) AS u, toInt64(sum(cost_micros)) AS cost FROM {table} WHERE hour >= ? AND hour < ? GROUP BY keys ORDER BY keys;

-- name: funnel_by_object_from_raw
-- tables: clicks
-- example: toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT [toString(traffic_source_id), toString(offer_id)] AS keys, toInt64(countIf(is_bot = 0 AND (kind != 1))) AS c, toInt64(countIf(is_bot = 0 AND (kind != 1 AND lander_id != 0))) AS lv, toInt64(countIf(is_bot = 0 AND (kind = 1))) AS lc, toInt64(countIf(is_bot = 0 AND (kind = 1 OR (lander_id = 0 AND offer_id != 0)))) AS oc, toInt64(countIf(is_bot = 1 AND kind != 1)) AS b, toUInt64(uniqIf(visitor_id, kind != 1)) AS u, toInt64(sum(cost_micros)) AS cost FROM {table} WHERE ts >= ? AND ts < ? GROUP BY keys ORDER BY keys;

-- name: conversions_by_object
-- tables: conversions_funnel_hourly
-- example: 'approved', 'approved', toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT [toString(offer_id), toString(lander_id)] AS keys, toString(toDate(hour, 'UTC')) AS d, currency AS cur, toInt64(sumIf(conversions, status = ?)) AS a, toInt64(sumIf(revenue_micros, status = ?)) AS rev FROM {table} WHERE hour >= ? AND hour < ? GROUP BY keys, d, cur ORDER BY keys, d, cur;

-- name: conversions_by_object_from_raw
-- tables: conversions
-- example: 'approved', 'approved', toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT [toString(offer_id), toString(lander_id)] AS keys, toString(toDate(created_at, 'UTC')) AS d, currency AS cur, toInt64(countIf(status = ?)) AS a, toInt64(sumIf(revenue_micros, status = ?)) AS rev FROM (SELECT * FROM {table} WHERE (conversion_id, version) IN (SELECT conversion_id, max(version) FROM {table} GROUP BY conversion_id)) WHERE created_at >= ? AND created_at < ? GROUP BY keys, d, cur ORDER BY keys, d, cur;

-- name: users_current
-- tables: users
-- example:
SELECT * FROM (SELECT id, argMax(username, version) AS uname, argMax(role, version) AS urole, argMax(flow_ids, version) AS flows, argMax(password_hash, version) AS phash, argMax(deleted, version) AS gone, toString(min(created_at)) AS created, toString(max(updated_at)) AS updated FROM {table} GROUP BY id) WHERE gone = 0;

-- name: api_keys_current
-- tables: user_api_keys
-- example:
SELECT * FROM (SELECT key_id, argMax(user_id, version) AS uid, argMax(name, version) AS key_name, argMax(key_sha256, version) AS sha, argMax(revoked, version) AS gone, toString(min(created_at)) AS created FROM {table} GROUP BY key_id) WHERE gone = 0;

-- name: audit_page
-- tables: audit_log
-- example: 3, 5, 'flow', toDateTime('2026-01-01 00:00:00', 'UTC'), 51
SELECT id, toString(at) AS t, at_ms, user_id, username, role, via, object_kind, object_id, flow_id, action, before_json, after_json FROM {table} WHERE 1 AND flow_id IN (?, ?) AND object_kind = ? AND at >= ? ORDER BY at_ms DESC, id DESC LIMIT ?;

-- name: payout_by_object
-- tables: conversions_payout_hourly
-- example: 'approved', toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT [toString(offer_id), toString(flow_id)] AS keys, toString(toDate(hour, 'UTC')) AS d, currency AS cur, toInt64(sumIf(payout_micros, status = ?)) AS pay FROM {table} WHERE hour >= ? AND hour < ? GROUP BY keys, d, cur HAVING pay != 0 ORDER BY keys, d, cur;

-- name: payout_by_object_from_raw
-- tables: conversions
-- example: 'approved', toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT [toString(offer_id), toString(over_cap)] AS keys, toString(toDate(created_at, 'UTC')) AS d, if(payout_currency = '', currency, payout_currency) AS cur, toInt64(sumIf(if(payout_currency = '', revenue_micros, payout_micros), status = ?)) AS pay FROM (SELECT * FROM {table} WHERE (conversion_id, version) IN (SELECT conversion_id, max(version) FROM {table} GROUP BY conversion_id)) WHERE created_at >= ? AND created_at < ? GROUP BY keys, d, cur HAVING pay != 0 ORDER BY keys, d, cur;

-- name: report_costs_by_source
-- tables: click_costs_hourly
-- example: toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT [toString(flow_id)] AS keys, toString(toDate(hour, 'UTC')) AS d, cost_currency AS cur, toInt64(sum(cost_micros)) AS cost, cost_source AS src, toUInt64(sum(clicks)) AS n FROM {table} WHERE hour >= ? AND hour < ? GROUP BY keys, d, cur, src ORDER BY keys, d, cur, src;

-- name: report_conversion_costs
-- tables: conversion_costs_hourly
-- example: toDateTime('2026-01-01 00:00:00'), toDateTime('2036-01-01 00:00:00')
SELECT [toString(flow_id)] AS keys, toString(toDate(hour, 'UTC')) AS d, cost_currency AS cur, toInt64(sum(cost_micros)) AS cost, toUInt8(3) AS src, toUInt64(countIf(cost_micros != 0)) AS n FROM {table} WHERE hour >= ? AND hour < ? GROUP BY keys, d, cur HAVING cost != 0 ORDER BY keys, d, cur;

-- name: cost_update_owned_clicks
-- tables: clicks
-- example: 1, 0, 4000000000, 'a', 'u2', 1, 0, 4000000000, 'u1'
SELECT o, keys, d, cur, src, toUInt64(count()), toInt64(sum(c)) FROM (SELECT multiIf(flow_id = ? AND ts >= toDateTime(?) AND ts < toDateTime(?) AND sub1 = ?, ?, flow_id = ? AND ts >= toDateTime(?) AND ts < toDateTime(?), ?, '') AS o, [toString(flow_id)] AS keys, toString(toDate(ts, 'UTC')) AS d, cost_currency AS cur, if(cost_source = 0 AND cost_micros != 0, toUInt8(1), cost_source) AS src, cost_micros AS c FROM {table} WHERE 1 AND toStartOfHour(ts) >= toDateTime('2026-01-01 00:00:00', 'UTC') AND kind != 1) WHERE o != '' GROUP BY o, keys, d, cur, src ORDER BY o, keys, d, cur, src;

-- name: cost_update_owned_conversions
-- tables: conversions
-- example: 1, 0, 4000000000, 'u1'
SELECT o, keys, d, cur, toUInt8(3), toUInt64(count()), toInt64(sum(c)) FROM (SELECT multiIf(flow_id = ? AND click_ts >= toDateTime(?) AND click_ts < toDateTime(?), ?, '') AS o, [toString(flow_id)] AS keys, toString(toDate(created_at, 'UTC')) AS d, cost_currency AS cur, cost_micros AS c FROM {table} WHERE 1 AND cost_micros != 0 AND (conversion_id, version) IN (SELECT conversion_id, max(version) FROM {table} WHERE 1 GROUP BY conversion_id)) WHERE o != '' GROUP BY o, keys, d, cur ORDER BY o, keys, d, cur;

-- name: cost_updates_list
-- tables: cost_updates
-- example: 1
SELECT id, flow_id, toUInt32(from_ts), toUInt32(to_ts), amount_micros, currency, sub_id, source, subs, toUInt32(created_at), created_at_ms, created_by FROM {table} WHERE flow_id = ? ORDER BY created_at_ms DESC, id DESC LIMIT 1000;

-- name: user_settings_current
-- tables: user_settings
-- example:
SELECT * FROM (SELECT user_id AS uid, argMax(timezone, version) AS tz FROM {table} GROUP BY user_id) WHERE 1;
