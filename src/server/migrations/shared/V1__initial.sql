-- The schema threadsync serve used before versioned migrations, written so
-- that it also takes a database that code made (IF NOT EXISTS). Both
-- SQLite and PostgreSQL run every migration in this directory.

CREATE TABLE IF NOT EXISTS teams (
        team TEXT PRIMARY KEY,
        head_seq BIGINT NOT NULL DEFAULT 0,
        floor_seq BIGINT NOT NULL DEFAULT 0);

CREATE TABLE IF NOT EXISTS tokens (
        id TEXT PRIMARY KEY,
        team TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created BIGINT NOT NULL,
        revoked BIGINT);

CREATE TABLE IF NOT EXISTS clients (
        team TEXT NOT NULL,
        client TEXT NOT NULL,
        last_mutation BIGINT NOT NULL,
        PRIMARY KEY (team, client));

CREATE TABLE IF NOT EXISTS threads (
        team TEXT NOT NULL,
        thread TEXT NOT NULL,
        version BIGINT NOT NULL,
        created BIGINT NOT NULL,
        title TEXT NOT NULL,
        env TEXT NOT NULL,
        len BIGINT NOT NULL,
        last_id TEXT,
        PRIMARY KEY (team, thread));

CREATE TABLE IF NOT EXISTS messages (
        team TEXT NOT NULL,
        thread TEXT NOT NULL,
        id TEXT NOT NULL,
        pos BIGINT NOT NULL,
        after TEXT,
        deleted BIGINT NOT NULL DEFAULT 0,
        body TEXT NOT NULL,
        PRIMARY KEY (team, thread, id));

CREATE INDEX IF NOT EXISTS messages_by_pos ON messages (team, thread, pos);

CREATE TABLE IF NOT EXISTS changes (
        team TEXT NOT NULL,
        seq BIGINT NOT NULL,
        thread TEXT NOT NULL,
        version BIGINT NOT NULL,
        effect TEXT NOT NULL,
        msg_id TEXT,
        PRIMARY KEY (team, seq));

CREATE INDEX IF NOT EXISTS changes_by_thread ON changes (team, thread, version);
