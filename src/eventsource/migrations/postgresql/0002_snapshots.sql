-- Snapshots: the newest state of each aggregate, a cache that saves replaying its stream.
CREATE TABLE IF NOT EXISTS {table:snapshots} (
    aggregate_id   uuid NOT NULL,
    aggregate_type text NOT NULL,
    version        bigint NOT NULL,
    schema_version integer NOT NULL,
    state          jsonb NOT NULL,
    created_at     timestamptz NOT NULL,
    CONSTRAINT {name:snapshots_pkey} PRIMARY KEY (aggregate_id)
);

CREATE INDEX IF NOT EXISTS {name:snapshots_type_idx}
    ON {table:snapshots} (aggregate_type, schema_version);
