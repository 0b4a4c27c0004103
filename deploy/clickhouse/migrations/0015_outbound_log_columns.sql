-- The rejection reason a postback sent (Affise's notice) on each conversion version, and
-- the outbound log's columns of Affise's affiliate postback log: the traffic source and
-- offer of the conversion, its reason, the integration type (s2s, pixel) and the type of
-- postback (conversion). Rows written before these columns read as empty / 0; the
-- reporting API shows an old attempt's empty integration and type as s2s and conversion.

ALTER TABLE conversions ADD COLUMN reason String;
ALTER TABLE outbound_log ADD COLUMN traffic_source_id UInt32;
ALTER TABLE outbound_log ADD COLUMN offer_id UInt32;
ALTER TABLE outbound_log ADD COLUMN reason String;
ALTER TABLE outbound_log ADD COLUMN integration String;
ALTER TABLE outbound_log ADD COLUMN postback_type String;
