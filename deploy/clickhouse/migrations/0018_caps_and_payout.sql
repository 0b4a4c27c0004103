-- Caps and payout (docs/caps.md): a conversion created over a cap of its offer or flow
-- (`over_cap`), what the affiliate is paid beside the revenue (`payout_micros` in
-- `payout_currency`; empty currency = a row from before payouts, whose payout is its
-- revenue), the previous version's payout so sums move with status, and why an outbound
-- postback of an over-cap conversion was not sent (`cap_action`: held or suppressed).

ALTER TABLE conversions ADD COLUMN over_cap UInt8;
ALTER TABLE conversions ADD COLUMN payout_micros Int64;
ALTER TABLE conversions ADD COLUMN payout_currency String;
ALTER TABLE conversions ADD COLUMN previous_payout_micros Int64;
ALTER TABLE outbound_log ADD COLUMN cap_action String;
