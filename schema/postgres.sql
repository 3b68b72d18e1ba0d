-- eventq schema for PostgreSQL, version 9: the whole current schema, for operators.
--
-- The library creates and upgrades it by itself (migrations/postgres/, applied when a queue
-- opens, under an advisory lock so that many instances starting at once migrate once; the
-- history is in EventQueueSchema). Everything lives in one schema, `public` unless the queue URL
-- says `?schema=NAME` (libpq keyword form: `eventq_schema=NAME`). Names are unquoted, so the
-- queries below are the same as on SQLite; in psql first run:  SET search_path TO <schema>;
--
-- To create it by hand (e.g. when the application's role may not create tables), run this file
-- with search_path set to the target schema, then record the version:
--   INSERT INTO EventQueueSchema (Version, Description)
--     VALUES (1, '0001_initial'), (2, '0002_operations'), (3, '0003_signatures'),
--            (4, '0004_hostile_rows'), (5, '0005_control'), (6, '0006_failures'),
--            (7, '0007_incarnation'), (8, '0008_lease_fence');
-- Roles with least privilege for applications, operators and cleanup: schema/postgres-roles.sql.

-- Which migrations were applied, and when. The schema version is max(Version).
CREATE TABLE EventQueueSchema (
  Version     int PRIMARY KEY,
  Description text NOT NULL,
  AppliedAt   timestamptz NOT NULL DEFAULT now()
);

-- One row per raised event. Rows are only inserted by raisers and deleted by cleanup.
CREATE TABLE EventQueue (
  -- Unique and never reused, but NOT commit order: two raising transactions can commit in the
  -- opposite order of their Ids, so no reader may use "Id > last seen" as its cursor.
  Id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- The event type name an application registered ("page.changed").
  EventType     text        NOT NULL,
  -- The payload: a JSON object. json, not jsonb: the text is kept exactly as raised.
  InstanceData  json        NOT NULL,
  -- The instance that raised it (options::instance_name).
  InstanceName  text        NOT NULL,
  -- true: delivered to the raising instance itself.
  RaiseLocally  boolean     NOT NULL,
  -- true: delivered to every other instance.
  RaiseGlobally boolean     NOT NULL,
  -- The id of the transaction that raised it, always: the trigger EventQueue_Stamp sets it
  -- whatever an INSERT says, and refuses to change it (since version 4). Instances read by snapshot: a poll delivers the
  -- rows whose Stamp is visible in the current snapshot and was not in the previous one
  -- (pg_visible_in_snapshot), so a transaction that commits late lands in a later poll.
  Stamp         xid8        NOT NULL DEFAULT pg_current_xact_id(),
  -- When it was raised (compare with now() - interval '1 day'). Finite (since version 4;
  -- rows stored before are refused by instances and listed by `eventq verify`).
  Created       timestamptz NOT NULL DEFAULT now() CONSTRAINT EventQueue_Created
                CHECK (isfinite(Created)),
  -- The id of the key that signed the row (options::key_id). NULL: unsigned, refused by
  -- instances that verify (the default).
  KeyId         text,
  -- HMAC-SHA256, 64 hex digits, over KeyId, EventType, InstanceData (the text as raised),
  -- InstanceName, the flags and Created in milliseconds (the canonical form is in
  -- include/eventq/signing.h). A row whose signature does not match is logged, counted and
  -- skipped, never delivered.
  Signature     text,
  -- Neither flag: meant for nobody; refused (the signature's flags digit cannot express it).
  CONSTRAINT EventQueue_Flags CHECK (RaiseLocally OR RaiseGlobally)
);
-- Reads scan a Stamp range in (Stamp, Id) order; cleanup deletes by age.
CREATE INDEX EventQueue_Stamp ON EventQueue (Stamp, Id);
CREATE INDEX EventQueue_Created ON EventQueue (Created);
-- Polls of instances whose every listener names its types read one range per type (a name, or
-- a prefix such as "media." as a bytewise range, hence "C") in (Stamp, Id) order (since
-- version 9); the cursor still passes the rows of other types.
CREATE INDEX EventQueue_Type ON EventQueue (EventType COLLATE "C", Stamp, Id);

-- Key/value settings.
--   EQStamp_<instance>: that instance's cursor, a snapshot 'xmin:xmax:in-progress,...' (every
--     event whose Stamp is visible in it was processed). While it drains a backlog page by page
--     it reads 'snapshot|target snapshot|stamp:id' (the last event processed). Cleanup
--     replaces the cursor of an instance dead longer than its hard maximum age by
--     'removed;at=<UTC time>': the instance, if it comes back, reports Missed and reads on
--     from the oldest retained event.
--   EQSecret: the signing secret when the application gives none (options::secret,
--     EVENTQ_SECRET): created by the first instance. Whoever can read it can forge events;
--     keep it outside the database where writers are not all trusted (docs/security.md).
--     Since version 4 either may end in ';c=<snapshot>' (where the instance last read
--     EventQueueDeleted), ';n=<stamp>:<id>' (the newest event visible to it, what a failover
--     checks; absent in older cursors) and ';db=<system identifier>.<timeline>' (the database
--     incarnation it belongs to; another cluster gives Missed once, then a start from the
--     current snapshot; a later timeline of this one, a promoted standby, is continued from
--     when its newest event is there).
CREATE TABLE Properties (
  Key   text PRIMARY KEY,
  Value text NOT NULL
);

-- Stamp is the inserting transaction's id, whatever the INSERT says; it never changes.
CREATE FUNCTION eventq_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    NEW.Stamp := pg_catalog.pg_current_xact_id();
  ELSIF NEW.Stamp IS DISTINCT FROM OLD.Stamp THEN
    RAISE EXCEPTION 'EventQueue.Stamp cannot be changed (row %)', OLD.Id;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER EventQueue_Stamp BEFORE INSERT OR UPDATE OF Stamp ON EventQueue
  FOR EACH ROW EXECUTE FUNCTION eventq_stamp();

-- The deletion record (since version 4): one row per statement that deleted events. Each
-- instance reads the entries committed since its last read and reports Missed once when one
-- names a transaction whose events it had not processed (beyond its snapshot, or in its
-- in-progress list). Cleanup deletes entries older than the hard maximum age.
CREATE TABLE EventQueueDeleted (
  -- The deleting transaction.
  Deleter xid8        NOT NULL DEFAULT pg_current_xact_id(),
  -- TRUNCATE: every Stamp below this may be gone. NULL for a DELETE.
  Below   xid8,
  -- DELETE: the distinct Stamps of the rows it deleted.
  Stamps  xid8[],
  -- When (for pruning).
  At      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX EventQueueDeleted_Deleter ON EventQueueDeleted (Deleter);
CREATE INDEX EventQueueDeleted_At ON EventQueueDeleted (At);

-- Deleting rows (cleanup, or by hand) records their Stamps.
CREATE FUNCTION eventq_record_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO EventQueueDeleted (Stamps)
    SELECT array_agg(DISTINCT Stamp ORDER BY Stamp) FROM eventq_deleted HAVING count(*) > 0;
  RETURN NULL;
END $$;
CREATE TRIGGER EventQueue_Deleted AFTER DELETE ON EventQueue
  REFERENCING OLD TABLE AS eventq_deleted
  FOR EACH STATEMENT EXECUTE FUNCTION eventq_record_deleted();

-- TRUNCATE: every instance that had not processed everything reports Missed once.
CREATE FUNCTION eventq_record_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO EventQueueDeleted (Below) VALUES (pg_catalog.pg_current_xact_id());
  RETURN NULL;
END $$;
CREATE TRIGGER EventQueue_Truncated AFTER TRUNCATE ON EventQueue
  FOR EACH STATEMENT EXECUTE FUNCTION eventq_record_truncated();

-- The deletion triggers run as their owner (SECURITY DEFINER, set below): their
-- names resolve in this schema first and pg_temp last, so a caller's temporary table cannot
-- stand in for EventQueueDeleted.
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION eventq_record_deleted() SET search_path = %I, pg_temp',
                 current_schema());
  EXECUTE format('ALTER FUNCTION eventq_record_truncated() SET search_path = %I, pg_temp',
                 current_schema());
  EXECUTE format('ALTER FUNCTION eventq_stamp() SET search_path = %I, pg_temp', current_schema());
  -- The record is written with the owner's rights, so a role that may DELETE events needs no
  -- right on EventQueueDeleted (schema/postgres-roles.sql did this for the old triggers).
  ALTER FUNCTION eventq_record_deleted() SECURITY DEFINER;
  ALTER FUNCTION eventq_record_truncated() SECURITY DEFINER;
END $$;

-- The instance registry (since version 2): one row per instance name that ever opened the queue.
-- A running instance renews its lease every third of options::lease (default 30 s); a second
-- process opening the same name while the lease is live is refused. Closing releases the lease;
-- a crash lets it expire. Lease times are the server's clock (now()).
CREATE TABLE EventQueueInstances (
  -- options::instance_name; its cursor is the Properties row 'EQStamp_' || Name.
  Name       text        PRIMARY KEY,
  -- Host name of the process that holds (or last held) the name; '' for instances that last
  -- ran before version 2.
  Host       text        NOT NULL,
  -- Its process id on that host (0: before version 2).
  Pid        integer     NOT NULL,
  -- The eventq version it runs.
  Version    text        NOT NULL,
  -- Random per opening: only the process holding this token renews or releases the lease and
  -- stores the cursor. Stored as its sha256, in hex (since version 8): reading the registry does
  -- not give the token away.
  Token      text        NOT NULL,
  -- When it last opened the queue.
  Started    timestamptz NOT NULL,
  -- Its latest lease renewal (or release).
  Heartbeat  timestamptz NOT NULL,
  -- The lease ends here: live while this is in the future. Equal to Heartbeat once released.
  LeaseUntil timestamptz NOT NULL,
  -- Its counters (queue::stats()) as a JSON object, written at each lease renewal (since
  -- version 5): {"raised":..,"delivered":..,"handler_errors":..,"unauthentic":..,"missed":..}.
  -- NULL until its first renewal.
  Counters   text,
  -- The client address of the holder's connection as the server saw it (NULL over a Unix
  -- socket; since version 8): taking over a dead process's name must come from the same one.
  ClientAddr inet
);

-- Operators' requests to one instance (since version 5): `eventq resync --instance NAME`,
-- `eventq replay --instance NAME --since 30m`. Stored only for a live instance; the instance
-- takes it at its next lease renewal (within a third of the lease), carries it out before its
-- next poll and writes the result.
CREATE TABLE EventQueueControl (
  Id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- The instance it is addressed to.
  Instance    text        NOT NULL,
  -- 'resync': raise Missed and continue from the head; 'replay': deliver again every retained
  -- event raised since Since.
  Action      text        NOT NULL CHECK (Action IN ('resync', 'replay')),
  Since       timestamptz,
  -- Who asked ('eventq-cli@<host>:<pid>'), and when.
  RequestedBy text        NOT NULL,
  Requested   timestamptz NOT NULL DEFAULT now(),
  -- When the instance took it; NULL while pending.
  PickedUp    timestamptz,
  -- When it was carried out, and how ('resynced: ...', 'replaying ...', 'failed: ...').
  Done        timestamptz,
  Result      text
);
CREATE INDEX EventQueueControl_Pending ON EventQueueControl (Instance) WHERE PickedUp IS NULL;

-- Database-wide tasks that one process at a time runs (since version 2): 'cleanup'.
CREATE TABLE EventQueueTasks (
  -- The task: 'cleanup'.
  Name       text PRIMARY KEY,
  -- Who runs it now ('<instance>@<host>:<pid>', or 'eventq-cli@<host>:<pid>'); NULL when idle.
  Holder     text,
  -- The holder's lease (renewed after every batch); a crashed holder is replaced after it.
  LeaseUntil timestamptz,
  -- When it last completed; instances run the cleanup when this is older than
  -- options::cleanup_interval.
  LastRun    timestamptz,
  -- The one-line summary of that run ("cleanup: deleted 1200 rows in 1 batch, ...").
  LastResult text
);

-- Events a session gave up on (since version 6): a listener threw on every attempt
-- (session_config::retries), or a typed listener could not decode the event. One row per event
-- and listener; the queue moved on past it. `eventq failures` lists them.
CREATE TABLE EventQueueFailures (
  Id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- The instance whose listener failed, and its session (session_config::name).
  InstanceName text        NOT NULL,
  SessionName  text        NOT NULL,
  -- The event: EventQueue.Id (the row may since have been cleaned up) and EventType.
  EventId      bigint      NOT NULL,
  EventType    text        NOT NULL,
  -- The last error the listener threw ("cannot decode: ..." for an undecodable event).
  Error        text        NOT NULL,
  -- Calls made: 1 + session_config::retries, or 1 for an undecodable event.
  Attempts     integer     NOT NULL CHECK (Attempts >= 1),
  -- When it was given up on, by the server's clock.
  FailedAt     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX EventQueueFailures_FailedAt ON EventQueueFailures (FailedAt);

-- The snapshot an instance's cursor has fully processed: the cursor itself, or its first part
-- while it pages through a backlog ('prev|target|stamp:id'; rows of the page in progress then
-- still count as behind). NULL for a cursor that is not a snapshot (edited by hand).
CREATE FUNCTION eventq_cursor_snapshot(cursor text) RETURNS pg_snapshot
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN split_part(split_part(cursor, ';', 1), '|', 1)::pg_snapshot;
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$;

-- Each instance, its cursor and how far behind it is (one row per registered instance).
--   Instance            the instance name
--   Cursor              its stored cursor (a snapshot, see Properties)
--   Behind              rows it has not processed: those whose Stamp is not visible in its
--                       cursor snapshot (NOT pg_visible_in_snapshot), addressed to it or not;
--                       0: caught up; NULL: the cursor is not a snapshot
--   Live                true while its lease runs (the process is up)
--   HeartbeatAgeSeconds seconds since its latest renewal; above a third of the lease (10 s by
--                       default) plus a little, renewals are failing
--   Heartbeat, LeaseUntil, Host, Pid, Version, Started: as in EventQueueInstances
CREATE VIEW EventQueueLag AS
SELECT i.Name AS Instance,
       p.Value AS Cursor,
       CASE WHEN s.Snap IS NULL THEN NULL
            ELSE (SELECT count(*) FROM EventQueue e
                  WHERE e.Stamp >= pg_snapshot_xmin(s.Snap)
                    AND NOT pg_visible_in_snapshot(e.Stamp, s.Snap))
       END AS Behind,
       i.LeaseUntil > now() AS Live,
       round(extract(epoch FROM now() - i.Heartbeat)::numeric, 3)::double precision
         AS HeartbeatAgeSeconds,
       i.Heartbeat AS Heartbeat,
       i.LeaseUntil AS LeaseUntil,
       i.Host AS Host,
       i.Pid AS Pid,
       i.Version AS Version,
       i.Started AS Started
FROM EventQueueInstances i
  LEFT JOIN Properties p ON p.Key = 'EQStamp_' || i.Name
  LEFT JOIN LATERAL (SELECT eventq_cursor_snapshot(p.Value) AS Snap) s ON true;

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

-- Writes to the registry, the cursor rows and the task leases (since version 8): functions that
-- run as their owner and check the lease token, so that schema/postgres-roles.sql can give the
-- application role no direct UPDATE (one instance cannot move another's cursor or lease).
CREATE FUNCTION eventq_token_hash(token text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(token, 'UTF8')), 'hex')
$$;

-- A lease is at most a day: a caller cannot keep a name (or the cleanup task) for years.
CREATE FUNCTION eventq_check_lease(lease_ms bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF lease_ms IS NULL OR lease_ms < 1 OR lease_ms > 86400000 THEN
    RAISE EXCEPTION 'eventq: a lease must be between 1 ms and 1 day, not % ms', lease_ms
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
END $$;

-- Registers (or takes over) the name: when its lease expired, when `token` holds it, or when
-- the caller says process `dead_pid` of `host` is gone (and calls from the same client address).
-- False: another holder's lease is live; nothing written.
CREATE FUNCTION eventq_claim_instance(p_name text, p_host text, p_pid bigint, p_version text,
                                      p_token text, p_lease_ms bigint, p_dead_pid bigint)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  n bigint;
BEGIN
  PERFORM eventq_check_lease(p_lease_ms);
  INSERT INTO EventQueueInstances AS i (Name, Host, Pid, Version, Token, Started, Heartbeat,
                                        LeaseUntil, ClientAddr)
  VALUES (p_name, p_host, p_pid, p_version, eventq_token_hash(p_token), now(), now(),
          now() + p_lease_ms * interval '1 millisecond', pg_catalog.inet_client_addr())
  ON CONFLICT (Name) DO UPDATE SET Host = EXCLUDED.Host, Pid = EXCLUDED.Pid,
    Version = EXCLUDED.Version, Token = EXCLUDED.Token, Started = EXCLUDED.Started,
    Heartbeat = EXCLUDED.Heartbeat, LeaseUntil = EXCLUDED.LeaseUntil,
    ClientAddr = EXCLUDED.ClientAddr
  WHERE i.LeaseUntil <= now() OR i.Token = EXCLUDED.Token
     OR (p_dead_pid > 0 AND i.Host = EXCLUDED.Host AND i.Pid = p_dead_pid
         AND i.ClientAddr IS NOT DISTINCT FROM EXCLUDED.ClientAddr);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n = 1;
END $$;

-- Extends the lease `token` holds (and records the counters unless NULL). False: not held.
CREATE FUNCTION eventq_renew_instance(p_name text, p_token text, p_lease_ms bigint,
                                      p_counters text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  n bigint;
BEGIN
  PERFORM eventq_check_lease(p_lease_ms);
  UPDATE EventQueueInstances SET Heartbeat = now(),
         LeaseUntil = now() + p_lease_ms * interval '1 millisecond',
         Counters = coalesce(p_counters, Counters)
   WHERE Name = p_name AND Token = eventq_token_hash(p_token);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n = 1;
END $$;

-- Ends the lease `token` holds. False: not held.
CREATE FUNCTION eventq_release_instance(p_name text, p_token text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  n bigint;
BEGIN
  UPDATE EventQueueInstances SET Heartbeat = now(), LeaseUntil = now()
   WHERE Name = p_name AND Token = eventq_token_hash(p_token);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n = 1;
END $$;

-- Stores the cursor of `name` while `token` holds the name, in one statement. False: the name
-- is another's (its lease lapsed and the name was taken over), nothing written.
CREATE FUNCTION eventq_store_cursor(p_name text, p_token text, p_cursor text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  n bigint;
BEGIN
  INSERT INTO Properties (Key, Value)
  SELECT 'EQStamp_' || p_name, p_cursor
   WHERE EXISTS (SELECT 1 FROM EventQueueInstances
                  WHERE Name = p_name AND Token = eventq_token_hash(p_token))
  ON CONFLICT (Key) DO UPDATE SET Value = EXCLUDED.Value;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n = 1;
END $$;

-- Takes the database-wide lease `task` for `holder` (see storage::acquire_task). LastRun is
-- only ever the server's now(), set by eventq_release_task.
CREATE FUNCTION eventq_acquire_task(p_task text, p_holder text, p_length_ms bigint,
                                    p_min_interval_ms bigint)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  n bigint;
BEGIN
  PERFORM eventq_check_lease(p_length_ms);
  INSERT INTO EventQueueTasks AS t (Name, Holder, LeaseUntil)
  VALUES (p_task, p_holder, now() + p_length_ms * interval '1 millisecond')
  ON CONFLICT (Name) DO UPDATE SET Holder = EXCLUDED.Holder, LeaseUntil = EXCLUDED.LeaseUntil
  WHERE (t.Holder IS NULL OR t.LeaseUntil <= now() OR t.Holder = EXCLUDED.Holder)
    AND (t.Holder = EXCLUDED.Holder OR t.LastRun IS NULL
         OR t.LastRun <= now() - greatest(p_min_interval_ms, 0) * interval '1 millisecond');
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n = 1;
END $$;

-- Gives up `task` if `holder` holds it; `completed`: LastRun = now(), LastResult = `result`.
CREATE FUNCTION eventq_release_task(p_task text, p_holder text, p_completed boolean,
                                    p_result text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  n bigint;
BEGIN
  UPDATE EventQueueTasks SET Holder = NULL, LeaseUntil = NULL,
         LastRun = CASE WHEN p_completed THEN now() ELSE LastRun END,
         LastResult = CASE WHEN p_completed THEN p_result ELSE LastResult END
   WHERE Name = p_task AND Holder = p_holder;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n = 1;
END $$;

-- Run as their owner, so a name they use must not resolve to a temporary table of the caller:
-- the schema, then pg_temp (as for the deletion triggers of 0004).
DO $$
DECLARE
  f text;
BEGIN
  FOREACH f IN ARRAY ARRAY[
      'eventq_token_hash(text)', 'eventq_check_lease(bigint)',
      'eventq_claim_instance(text, text, bigint, text, text, bigint, bigint)',
      'eventq_renew_instance(text, text, bigint, text)', 'eventq_release_instance(text, text)',
      'eventq_store_cursor(text, text, text)', 'eventq_acquire_task(text, text, bigint, bigint)',
      'eventq_release_task(text, text, boolean, text)'] LOOP
    EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
  END LOOP;
END $$;

-- Wake-ups: a raise runs pg_notify('eventq_<schema>', '') in its transaction (sent at commit,
-- payload empty: the event itself is always read from the table). URL `notify=off` disables it.
--
-- Queries an operator runs:
--   Newest events:
--     SELECT Id, EventType, InstanceName, Stamp, Created FROM EventQueue ORDER BY Id DESC LIMIT 20;
--   Who is running, and how far behind (see also docs/operating.md):
--     SELECT Instance, Live, Behind, HeartbeatAgeSeconds, Host, Pid FROM EventQueueLag;
--   Unsigned rows (refused by verifying instances):
--     SELECT Id, EventType, InstanceName, Created FROM EventQueue WHERE Signature IS NULL;
--   Rows per type:
--     SELECT * FROM EventQueueStats ORDER BY Rows DESC;
--   Events listeners gave up on, newest first:
--     SELECT FailedAt, InstanceName, SessionName, EventId, EventType, Attempts, Error
--     FROM EventQueueFailures ORDER BY Id DESC LIMIT 20;
--   The last cleanup:
--     SELECT LastRun, LastResult, Holder FROM EventQueueTasks WHERE Name = 'cleanup';
--   Transactions still running that raised events (their rows appear when they commit):
--     SELECT pid, backend_xid, xact_start, state FROM pg_stat_activity
--     WHERE backend_xid IS NOT NULL ORDER BY xact_start;
