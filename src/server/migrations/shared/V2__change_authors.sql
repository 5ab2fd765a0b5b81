-- Who made each change (the pushing client's id): a pull names its client
-- ids, and its own inserts come back without the content it already has.
-- Changes logged before this migration have no author and are sent whole.

ALTER TABLE changes ADD COLUMN author TEXT;
