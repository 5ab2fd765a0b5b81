-- Full-text search (PostgreSQL): each message's text as a tsvector in a
-- GIN index. Kept in the push transaction. The messages already stored are
-- indexed when a server opens the database (search_backfill says that is
-- still to do).

ALTER TABLE messages ADD COLUMN search tsvector;
CREATE INDEX messages_search ON messages USING GIN (search);

CREATE TABLE search_backfill (pending BIGINT NOT NULL);
INSERT INTO search_backfill (pending) VALUES (1);
