-- The lean stored form: the payload holds the event's own fields, and what the JSON used to
-- repeat of the envelope gets typed columns. A row is lean when its correlation_id is set
-- (every event has one); rows written before this migration keep NULL there and their
-- complete payload, and read as before. Nullable columns without a default: adding them
-- rewrites nothing, so this is instant on a table of any size.
ALTER TABLE {table:events}
    ADD COLUMN IF NOT EXISTS correlation_id uuid,
    ADD COLUMN IF NOT EXISTS causation_id uuid,
    ADD COLUMN IF NOT EXISTS metadata jsonb;
