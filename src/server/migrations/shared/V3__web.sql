-- The web pages: when a thread last changed (the list's order), who wrote
-- each message (its pushing client) and which machine a client runs on,
-- signed-in browser sessions, and share links. Sessions and links are
-- stored as hashes of their secrets, like tokens.

ALTER TABLE threads ADD COLUMN updated BIGINT NOT NULL DEFAULT 0;
UPDATE threads SET updated = created;
CREATE INDEX threads_by_update ON threads (team, updated, thread);

ALTER TABLE messages ADD COLUMN author TEXT;
ALTER TABLE clients ADD COLUMN machine TEXT;

CREATE TABLE web_sessions (
        hash TEXT PRIMARY KEY,
        team TEXT NOT NULL,
        token_id TEXT NOT NULL,
        csrf TEXT NOT NULL,
        created BIGINT NOT NULL,
        expires BIGINT NOT NULL);

CREATE TABLE shares (
        id TEXT PRIMARY KEY,
        team TEXT NOT NULL,
        thread TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created BIGINT NOT NULL,
        expires BIGINT,
        revoked BIGINT);

CREATE INDEX shares_by_thread ON shares (team, thread);
