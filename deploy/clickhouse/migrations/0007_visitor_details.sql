-- The visitor's browser, OS and device as uap-core names them, with versions, brand and
-- model, and why a bot click is one (a word of traffsure_core::vocab's BotReason, empty
-- for people). browser, os and device keep the coarse families derived from these. Rows
-- written before this migration read as empty strings.

ALTER TABLE clicks ADD COLUMN bot_reason String AFTER is_bot;
ALTER TABLE clicks ADD COLUMN browser_family String AFTER browser;
ALTER TABLE clicks ADD COLUMN browser_major String AFTER browser_family;
ALTER TABLE clicks ADD COLUMN browser_minor String AFTER browser_major;
ALTER TABLE clicks ADD COLUMN os_family String AFTER browser_minor;
ALTER TABLE clicks ADD COLUMN os_major String AFTER os_family;
ALTER TABLE clicks ADD COLUMN os_minor String AFTER os_major;
ALTER TABLE clicks ADD COLUMN device_family String AFTER os_minor;
ALTER TABLE clicks ADD COLUMN device_brand String AFTER device_family;
ALTER TABLE clicks ADD COLUMN device_model String AFTER device_brand;
