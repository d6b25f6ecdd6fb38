-- The event table: one row per event, the stream's versions unique, the global feed ordered by
-- (transaction_id, position) so readers below the oldest open transaction never skip an event.
CREATE TABLE IF NOT EXISTS {table:events} (
    position          bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id    xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id          uuid NOT NULL,
    event_type        text NOT NULL,
    event_version     integer NOT NULL,
    aggregate_id      uuid NOT NULL,
    aggregate_type    text NOT NULL,
    aggregate_version bigint NOT NULL,
    tenant_id         uuid,
    occurred_at       timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    payload           jsonb NOT NULL,
    CONSTRAINT {name:events_pkey} PRIMARY KEY (position),
    CONSTRAINT {name:events_event_id_key} UNIQUE (event_id),
    CONSTRAINT {name:events_stream_version_key} UNIQUE (aggregate_id, aggregate_version),
    CONSTRAINT {name:events_version_check} CHECK (aggregate_version >= 1)
);

CREATE INDEX IF NOT EXISTS {name:events_feed_idx} ON {table:events} (transaction_id, position);
