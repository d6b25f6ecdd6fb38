-- Outbox leases and parked rows. Relays lease rows in one short transaction (claimed_by,
-- claimed_until) and publish outside any transaction, so no claim holds back the global feed;
-- a relay that dies leaves its lease to expire. A row the relay gave up on is parked
-- (parked_at) until an operator retries or discards it. Nullable columns without a default:
-- adding them rewrites nothing.
ALTER TABLE {table:outbox}
    ADD COLUMN IF NOT EXISTS claimed_by uuid,
    ADD COLUMN IF NOT EXISTS claimed_until timestamptz,
    ADD COLUMN IF NOT EXISTS parked_at timestamptz;

CREATE INDEX IF NOT EXISTS {name:outbox_parked_idx} ON {table:outbox} (id)
    WHERE parked_at IS NOT NULL;
