-- eventq schema for SQLite, version 9: the whole current schema, for operators.
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
-- Polls of instances whose every listener names its types read one range per type, in Id order
-- (since version 9); the cursor still passes the rows of other types.
CREATE INDEX EventQueue_Type ON EventQueue (EventType, Id);

-- What every instance would refuse on reading is refused at INSERT (since version 4; rows
-- stored before are reported by the migration in the log, refused by instances, counted, and
-- listed by `eventq verify`): a row addressed to nobody, and a Created that is not a time in
-- eventq's format and range.
CREATE TRIGGER EventQueue_Flags BEFORE INSERT ON EventQueue
  WHEN NEW.RaiseLocally = 0 AND NEW.RaiseGlobally = 0
BEGIN
  SELECT RAISE(ABORT, 'EventQueue: a row addressed to nobody (RaiseLocally and RaiseGlobally both 0)');
END;
CREATE TRIGGER EventQueue_Created BEFORE INSERT ON EventQueue
  WHEN typeof(NEW.Created) <> 'text' OR julianday(NEW.Created) IS NULL
    OR NEW.Created < '1678' OR NEW.Created >= '2262'
BEGIN
  SELECT RAISE(ABORT, 'EventQueue: Created must be a UTC time YYYY-MM-DD HH:MM:SS[.SSS] between 1678 and 2261');
END;

-- Key/value settings. Each instance's cursor is the row 'EQStamp_<instance name>', its value
-- the Id of the last event it processed (Sitecore's layout), followed since version 7 by
-- ';db=' and the file's incarnation ('42;db=9f0c...'; a plain Id, from before, is still read).
-- Cleanup replaces the cursor of an instance dead longer than its hard maximum age by
-- 'removed;at=<UTC time>': the instance, if it comes back, reports Missed and reads on from the
-- oldest retained event.
-- 'EQIncarnation' is that incarnation: 32 random hex digits, created once with the schema
-- (version 7). A copy of the file carries it, another database has another one: a cursor
-- whose incarnation is not the file's (the file was replaced, or restored from another
-- database's backup) gives Missed once instead of reading other events under the same Ids.
-- 'EQSecret' is the signing secret when the application gives none (options::secret,
-- EVENTQ_SECRET): created by the first instance; whoever can read it can forge events
-- (docs/security.md).
CREATE TABLE Properties (
  Key   TEXT PRIMARY KEY NOT NULL,
  Value TEXT NOT NULL
);
INSERT INTO Properties (Key, Value) VALUES ('EQIncarnation', lower(hex(randomblob(16))));

-- Which migrations were applied, and when. The schema version is max(Version).
CREATE TABLE EventQueueSchema (
  Version     INTEGER PRIMARY KEY,
  Description TEXT NOT NULL,
  AppliedAt   TEXT NOT NULL
);

-- The instance registry: one row per instance name that ever opened the queue (since version 2).
-- A running instance renews its lease every third of options::lease (default 30 s); a second
-- process opening the same name while the lease is live is refused. Closing releases the lease;
-- a crash lets it expire. Times are UTC, 'YYYY-MM-DD HH:MM:SS.SSS'.
CREATE TABLE EventQueueInstances (
  -- options::instance_name; its cursor is the Properties row 'EQStamp_' || Name.
  Name       TEXT    PRIMARY KEY NOT NULL,
  -- Host name of the process that holds (or last held) the name; '' for instances that last
  -- ran before version 2.
  Host       TEXT    NOT NULL,
  -- Its process id on that host (0: before version 2).
  Pid        INTEGER NOT NULL,
  -- The eventq version it runs.
  Version    TEXT    NOT NULL,
  -- Random per opening: only the process holding this token renews or releases the lease and
  -- stores the cursor (the write is conditional on it since version 8). Stored as is: whoever
  -- can read the file can write every row anyway.
  Token      TEXT    NOT NULL,
  -- When it last opened the queue.
  Started    TEXT    NOT NULL,
  -- Its latest lease renewal (or release).
  Heartbeat  TEXT    NOT NULL,
  -- The lease ends here: live while this is in the future. Equal to Heartbeat once released.
  LeaseUntil TEXT    NOT NULL,
  -- Its counters (queue::stats()) as a JSON object, written at each lease renewal (since
  -- version 5): {"raised":..,"delivered":..,"handler_errors":..,"unauthentic":..,"missed":..}.
  -- NULL until its first renewal.
  Counters   TEXT
);

-- Operators' requests to one instance (since version 5): `eventq resync --instance NAME`,
-- `eventq replay --instance NAME --since 30m`. Stored only for a live instance; the instance
-- takes it at its next lease renewal (within a third of the lease), carries it out before its
-- next poll and writes the result.
CREATE TABLE EventQueueControl (
  Id          INTEGER PRIMARY KEY AUTOINCREMENT,
  -- The instance it is addressed to.
  Instance    TEXT NOT NULL,
  -- 'resync': raise Missed and continue from the head; 'replay': deliver again every retained
  -- event raised since Since.
  Action      TEXT NOT NULL CHECK (Action IN ('resync', 'replay')),
  Since       TEXT,
  -- Who asked ('eventq-cli@<host>:<pid>'), and when (UTC).
  RequestedBy TEXT NOT NULL,
  Requested   TEXT NOT NULL,
  -- When the instance took it; NULL while pending.
  PickedUp    TEXT,
  -- When it was carried out, and how ('resynced: ...', 'replaying ...', 'failed: ...').
  Done        TEXT,
  Result      TEXT
);
CREATE INDEX EventQueueControl_Pending ON EventQueueControl (Instance) WHERE PickedUp IS NULL;

-- Database-wide tasks that one process at a time runs (since version 2): 'cleanup'.
CREATE TABLE EventQueueTasks (
  -- The task: 'cleanup'.
  Name       TEXT PRIMARY KEY NOT NULL,
  -- Who runs it now ('<instance>@<host>:<pid>', or 'eventq-cli@<host>:<pid>'); NULL when idle.
  Holder     TEXT,
  -- The holder's lease (renewed after every batch); a crashed holder is replaced after it.
  LeaseUntil TEXT,
  -- When it last completed; instances run the cleanup when this is older than
  -- options::cleanup_interval.
  LastRun    TEXT,
  -- The one-line summary of that run ("cleanup: deleted 1200 rows in 1 batch, ...").
  LastResult TEXT
);

-- Events a session gave up on (since version 6): a listener threw on every attempt
-- (session_config::retries), or a typed listener could not decode the event. One row per event
-- and listener; the queue moved on past it. `eventq failures` lists them.
CREATE TABLE EventQueueFailures (
  Id           INTEGER PRIMARY KEY AUTOINCREMENT,
  -- The instance whose listener failed, and its session (session_config::name).
  InstanceName TEXT    NOT NULL,
  SessionName  TEXT    NOT NULL,
  -- The event: EventQueue.Id (the row may since have been cleaned up) and EventType.
  EventId      INTEGER NOT NULL,
  EventType    TEXT    NOT NULL,
  -- The last error the listener threw ("cannot decode: ..." for an undecodable event).
  Error        TEXT    NOT NULL,
  -- Calls made: 1 + session_config::retries, or 1 for an undecodable event.
  Attempts     INTEGER NOT NULL CHECK (Attempts >= 1),
  -- When it was given up on, UTC, 'YYYY-MM-DD HH:MM:SS.SSS'.
  FailedAt     TEXT    NOT NULL
);
CREATE INDEX EventQueueFailures_FailedAt ON EventQueueFailures (FailedAt);

-- Each instance, its cursor and how far behind it is (one row per registered instance).
--   Instance            the instance name
--   Cursor              its stored cursor: the Id of the last event it processed (and, since
--                       version 7, ';db=' and the file's incarnation)
--   Behind              rows after the cursor's Id, addressed to it or not (0: caught up; a
--                       cursor that does not start with a number counts every row)
--   Live                1 while its lease runs (the process is up), 0 otherwise
--   HeartbeatAgeSeconds seconds since its latest renewal; above a third of the lease (10 s by
--                       default) plus a little, renewals are failing
--   Heartbeat, LeaseUntil, Host, Pid, Version, Started: as in EventQueueInstances
CREATE VIEW EventQueueLag AS
SELECT i.Name AS Instance,
       p.Value AS Cursor,
       CASE WHEN p.Value IS NULL THEN NULL
            ELSE (SELECT count(*) FROM EventQueue e WHERE e.Id > CAST(p.Value AS INTEGER))
       END AS Behind,
       i.LeaseUntil > strftime('%Y-%m-%d %H:%M:%f', 'now') AS Live,
       round((julianday('now') - julianday(i.Heartbeat)) * 86400.0, 3) AS HeartbeatAgeSeconds,
       i.Heartbeat AS Heartbeat,
       i.LeaseUntil AS LeaseUntil,
       i.Host AS Host,
       i.Pid AS Pid,
       i.Version AS Version,
       i.Started AS Started
FROM EventQueueInstances i LEFT JOIN Properties p ON p.Key = 'EQStamp_' || i.Name;

-- Rows per event type: EventType, Rows, Oldest and Newest (Created), MinId, MaxId.
-- Totals: SELECT sum(Rows), min(Oldest), max(Newest) FROM EventQueueStats;
CREATE VIEW EventQueueStats AS
SELECT EventType,
       count(*) AS Rows,
       min(Created) AS Oldest,
       max(Created) AS Newest,
       min(Id) AS MinId,
       max(Id) AS MaxId
FROM EventQueue GROUP BY EventType;

-- Queries an operator runs (see also docs/operating.md):
--   Who is running, and how far behind:
--     SELECT Instance, Live, Behind, HeartbeatAgeSeconds, Host, Pid FROM EventQueueLag;
--   Newest events:
--     SELECT Id, EventType, InstanceName, Created FROM EventQueue ORDER BY Id DESC LIMIT 20;
--   Unsigned rows (refused by verifying instances):
--     SELECT Id, EventType, InstanceName, Created FROM EventQueue WHERE Signature IS NULL;
--   Rows per type:
--     SELECT * FROM EventQueueStats ORDER BY Rows DESC;
--   Events listeners gave up on, newest first:
--     SELECT FailedAt, InstanceName, SessionName, EventId, EventType, Attempts, Error
--     FROM EventQueueFailures ORDER BY Id DESC LIMIT 20;
--   The last cleanup:
--     SELECT LastRun, LastResult, Holder FROM EventQueueTasks WHERE Name = 'cleanup';
