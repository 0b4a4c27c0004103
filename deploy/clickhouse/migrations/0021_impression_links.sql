-- What links an impression to its click and conversions, and what the outbound log needs
-- for the new postback types: the impression a click named (`imp=`), copied onto its
-- conversions; whether a conversion is a follow-up of its click (not the click's first
-- conversion: an upsell, deposit or rebill, which `event` postbacks fire for); and the
-- impression an impression postback fired for. Rows written before read as empty / 0.

ALTER TABLE clicks ADD COLUMN impression_id String;
ALTER TABLE conversions ADD COLUMN impression_id String;
ALTER TABLE conversions ADD COLUMN follow_up UInt8;
ALTER TABLE outbound_log ADD COLUMN impression_id String;
