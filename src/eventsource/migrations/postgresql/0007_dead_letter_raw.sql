-- Dead letters of events the reader could not decode (a type it does not register, a corrupt
-- payload, a failing upcaster) keep the stored row as it was read: its payload text, which
-- need not be JSON, in `raw_payload` (with `payload` NULL), and the envelope columns.
ALTER TABLE {table:dead_letters}
    ALTER COLUMN payload DROP NOT NULL,
    ADD COLUMN raw_payload text,
    ADD COLUMN event_version integer,
    ADD COLUMN aggregate_id uuid,
    ADD COLUMN aggregate_type text,
    ADD COLUMN aggregate_version bigint,
    ADD CONSTRAINT {name:dead_letters_payload_check}
        CHECK (payload IS NOT NULL OR raw_payload IS NOT NULL);
