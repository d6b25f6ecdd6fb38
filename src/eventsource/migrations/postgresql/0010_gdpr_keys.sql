-- The keys of data subjects (eventsource.gdpr): one AES-256 key per subject. Deleting a row
-- forgets the subject: the personal fields sealed with that key can no longer be read.
CREATE TABLE IF NOT EXISTS {table:gdpr_keys} (
    subject    text NOT NULL,
    key        bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {name:gdpr_keys_pkey} PRIMARY KEY (subject)
);
