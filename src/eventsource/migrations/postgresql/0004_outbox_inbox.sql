-- The transactional outbox: a row per event to publish, written in the append's transaction
-- (stores built with outbox=True), claimed by relays with FOR UPDATE SKIP LOCKED.
CREATE TABLE IF NOT EXISTS {table:outbox} (
    id                bigint GENERATED ALWAYS AS IDENTITY,
    event_id          uuid NOT NULL,
    event_type        text NOT NULL,
    event_version     integer NOT NULL,
    aggregate_id      uuid NOT NULL,
    aggregate_type    text NOT NULL,
    aggregate_version bigint NOT NULL,
    payload           text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_error        text,
    published_at      timestamptz,
    CONSTRAINT {name:outbox_pkey} PRIMARY KEY (id)
);

CREATE INDEX IF NOT EXISTS {name:outbox_pending_idx} ON {table:outbox} (id)
    WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS {name:outbox_aggregate_idx} ON {table:outbox} (aggregate_id, id)
    WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS {name:outbox_published_idx} ON {table:outbox} (published_at)
    WHERE published_at IS NOT NULL;

-- The inbox: which consumer processed which event, so redeliveries are dropped.
CREATE TABLE IF NOT EXISTS {table:inbox} (
    consumer     text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {name:inbox_pkey} PRIMARY KEY (consumer, event_id)
);

CREATE INDEX IF NOT EXISTS {name:inbox_processed_idx} ON {table:inbox} (processed_at);
