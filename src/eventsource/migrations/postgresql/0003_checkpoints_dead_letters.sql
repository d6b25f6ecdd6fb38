-- Checkpoints: how far each named subscription (or projection) has processed the global feed.
-- `name` sorts byte-wise (COLLATE "C") so checkpoints list in the same order on every backend,
-- whatever the database's collation.
CREATE TABLE IF NOT EXISTS {table:checkpoints} (
    name              text COLLATE "C" NOT NULL,
    position_commit   bigint NOT NULL,
    position_sequence bigint NOT NULL,
    event_id          uuid,
    event_type        text,
    events_processed  bigint NOT NULL,
    updated_at        timestamptz NOT NULL,
    CONSTRAINT {name:checkpoints_pkey} PRIMARY KEY (name)
);

-- Dead letters: the events a subscription's handler gave up on, one row per
-- (subscription, event) that a repeated failure updates.
CREATE TABLE IF NOT EXISTS {table:dead_letters} (
    id                uuid NOT NULL,
    subscription      text NOT NULL,
    event_id          uuid NOT NULL,
    event_type        text NOT NULL,
    position_commit   bigint NOT NULL,
    position_sequence bigint NOT NULL,
    payload           jsonb NOT NULL,
    error             text NOT NULL,
    traceback         text NOT NULL,
    attempts          integer NOT NULL,
    status            text NOT NULL,
    first_failed_at   timestamptz NOT NULL,
    last_failed_at    timestamptz NOT NULL,
    resolved_at       timestamptz,
    resolved_by       text,
    CONSTRAINT {name:dead_letters_pkey} PRIMARY KEY (id),
    CONSTRAINT {name:dead_letters_event_key} UNIQUE (subscription, event_id),
    CONSTRAINT {name:dead_letters_status_check}
        CHECK (status IN ('failed', 'retrying', 'resolved'))
);

CREATE INDEX IF NOT EXISTS {name:dead_letters_status_idx}
    ON {table:dead_letters} (subscription, status, first_failed_at);
