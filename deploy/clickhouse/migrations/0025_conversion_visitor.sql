-- The converting click's visitor details and fraud signals on every conversion version
-- (copied by attribution, as country, device, os and browser are), so reports group and
-- filter conversions by them without joining the clicks table. `visitor_details` is 1 on
-- versions that carry them (a click_missing one carries them empty); rows written before
-- this migration, or by an attribution that kept the click from before, read 0, and
-- reports read their values from their click as before. No backfill: ClickHouse 18.16's
-- ALTER … UPDATE cannot read another table, and inserting corrected copies would run the
-- conversion rollups' views again and count those conversions twice.

ALTER TABLE conversions ADD COLUMN bot_reason String;
ALTER TABLE conversions ADD COLUMN browser_family String;
ALTER TABLE conversions ADD COLUMN browser_major String;
ALTER TABLE conversions ADD COLUMN browser_minor String;
ALTER TABLE conversions ADD COLUMN os_family String;
ALTER TABLE conversions ADD COLUMN os_major String;
ALTER TABLE conversions ADD COLUMN os_minor String;
ALTER TABLE conversions ADD COLUMN device_family String;
ALTER TABLE conversions ADD COLUMN device_brand String;
ALTER TABLE conversions ADD COLUMN device_model String;
ALTER TABLE conversions ADD COLUMN asn UInt32;
ALTER TABLE conversions ADD COLUMN as_org String;
ALTER TABLE conversions ADD COLUMN datacenter UInt8;
ALTER TABLE conversions ADD COLUMN rate_exceeded UInt8;
ALTER TABLE conversions ADD COLUMN visitor_details UInt8;
