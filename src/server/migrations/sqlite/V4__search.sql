-- Full-text search (SQLite): an FTS5 index over each message's text, keyed
-- by the message row's rowid. Contentless: the text lives once, in
-- messages.body; snippets are cut from it. Prefixes of 2–4 characters
-- have their own index (search as you type). Kept in the push
-- transaction. The messages already stored are indexed when the server
-- opens the database (search_backfill says that is still to do).

CREATE VIRTUAL TABLE message_search USING fts5(
        text,
        content = '',
        contentless_delete = 1,
        tokenize = 'porter unicode61 remove_diacritics 2',
        prefix = '2 3 4');

CREATE TABLE search_backfill (pending BIGINT NOT NULL);
INSERT INTO search_backfill (pending) VALUES (1);
