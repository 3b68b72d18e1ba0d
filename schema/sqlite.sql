-- eventq schema for SQLite, version 3: the whole current schema, for operators.
--
-- The library creates and upgrades it by itself (migrations/sqlite/, applied in order when a
-- queue opens; the history is in EventQueueSchema). Open the file with `sqlite3 events.db`;
-- the database is in WAL mode, so reading it while instances run is safe.

-- One row per raised event. Rows are only inserted by raisers and deleted by cleanup.
CREATE TABLE EventQueue (
  -- Unique, increasing, never reused (AUTOINCREMENT: even after cleanup empties the table).
  -- SQLite serialises writers, so Id order is commit order: an instance's cursor is the last
  -- Id it processed.
  Id            INTEGER PRIMARY KEY AUTOINCREMENT,
  -- The event type name an application registered ("page.changed").
  EventType     TEXT    NOT NULL,
  -- The payload: a JSON object, as text, exactly as raised.
  InstanceData  TEXT    NOT NULL,
  -- The instance that raised it (options::instance_name).
  InstanceName  TEXT    NOT NULL,
  -- 1: delivered to the raising instance itself.
  RaiseLocally  INTEGER NOT NULL CHECK (RaiseLocally IN (0, 1)),
  -- 1: delivered to every other instance.
  RaiseGlobally INTEGER NOT NULL CHECK (RaiseGlobally IN (0, 1)),
  -- Sitecore's name for the ordering value; on SQLite it is the Id itself.
  Stamp         INTEGER GENERATED ALWAYS AS (Id) VIRTUAL,
  -- When it was raised, UTC, 'YYYY-MM-DD HH:MM:SS.SSS' (compare with datetime('now', '-1 day')).
  Created       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  -- The id of the key that signed the row (options::key_id). NULL: unsigned, refused by
  -- instances that verify (the default).
  KeyId         TEXT,
  -- HMAC-SHA256, 64 hex digits, over KeyId, EventType, InstanceData, InstanceName, the flags
  -- and Created (the canonical form is in include/eventq/signing.h). A row whose signature
  -- does not match is logged, counted and skipped, never delivered.
  Signature     TEXT
);
-- Cleanup deletes by age.
CREATE INDEX EventQueue_Created ON EventQueue (Created);

-- Key/value settings. Each instance's cursor is the row 'EQStamp_<instance name>', its value
-- the Id of the last event it processed (Sitecore's layout). 'EQSecret' is the signing secret
-- when the application gives none (options::secret, EVENTQ_SECRET): created by the first
-- instance; whoever can read it can forge events (docs/security.md).
CREATE TABLE Properties (
  Key   TEXT PRIMARY KEY NOT NULL,
  Value TEXT NOT NULL
);

-- Which migrations were applied, and when. The schema version is max(Version).
CREATE TABLE EventQueueSchema (
  Version     INTEGER PRIMARY KEY,
  Description TEXT NOT NULL,
  AppliedAt   TEXT NOT NULL
);

-- Queries an operator runs:
--   Newest events:
--     SELECT Id, EventType, InstanceName, Created FROM EventQueue ORDER BY Id DESC LIMIT 20;
--   Each instance's cursor and how many events it is behind:
--     SELECT substr(p.Key, 9) AS Instance, CAST(p.Value AS INTEGER) AS Cursor,
--            (SELECT count(*) FROM EventQueue e WHERE e.Id > CAST(p.Value AS INTEGER)) AS Behind
--     FROM Properties p WHERE p.Key LIKE 'EQStamp\_%' ESCAPE '\';
--   Unsigned rows (refused by verifying instances):
--     SELECT Id, EventType, InstanceName, Created FROM EventQueue WHERE Signature IS NULL;
--   Rows per type:
--     SELECT EventType, count(*), min(Created), max(Created) FROM EventQueue GROUP BY EventType;
