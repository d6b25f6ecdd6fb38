-- Durable saga timers (eventsource.sagas): when to wake a saga up. One row per (saga, name);
-- scheduling again replaces due_at and moves generation on. Engines claim due rows with
-- FOR UPDATE SKIP LOCKED and a lease (claimed_by, claimed_until) and delete them once fired,
-- only if generation is still the one they claimed.
CREATE TABLE IF NOT EXISTS {table:saga_timers} (
    saga_id uuid NOT NULL,
    name text NOT NULL,
    due_at timestamptz NOT NULL,
    generation bigint NOT NULL DEFAULT 1,
    claimed_by uuid,
    claimed_until timestamptz,
    PRIMARY KEY (saga_id, name)
);

CREATE INDEX IF NOT EXISTS {name:saga_timers_due_idx} ON {table:saga_timers} (due_at);
