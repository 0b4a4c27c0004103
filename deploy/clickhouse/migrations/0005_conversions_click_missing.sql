-- Conversions built from their click hash alone, because the click did not arrive within
-- attribution's hold timeout: their click dimensions are empty. Rows written before this
-- column read as 0 (their click was there).

ALTER TABLE conversions ADD COLUMN click_missing UInt8 AFTER disable_postbacks;
