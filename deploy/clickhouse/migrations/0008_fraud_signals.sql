-- Fraud signals of a click: its autonomous system and organisation, whether its address
-- is a hosting provider's, cloud's or CDN's (`datacenter`), and whether it exceeded the
-- edge instance's per-address click rate (`rate_exceeded`). Rows written before these
-- columns read as 0 / empty: no signal was looked up for them.
-- (`bot_reason`, why a click is a bot, comes with migration 7.)

ALTER TABLE clicks ADD COLUMN asn UInt32;
ALTER TABLE clicks ADD COLUMN as_org String;
ALTER TABLE clicks ADD COLUMN datacenter UInt8;
ALTER TABLE clicks ADD COLUMN rate_exceeded UInt8;
