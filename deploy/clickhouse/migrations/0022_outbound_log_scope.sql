-- Where each outbound postback attempt's postback is configured: "flow", "source:<id>",
-- "offer:<id>" or "global" (docs/postbacks.md#scopes). Rows written before read as empty;
-- the reporting API shows them as flow (or the traffic source's, for a source-<id> one).

ALTER TABLE outbound_log ADD COLUMN scope String;
