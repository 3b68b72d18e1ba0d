-- 0004: what the database can forbid, it forbids; deletions are recorded exactly.
-- Runs with search_path set to the eventq schema; names are unquoted on purpose.
--
-- Rows stored before that break a new rule are kept and reported (a WARNING here; instances
-- refuse them as malformed, count and log them, and `eventq verify` lists them), never dropped
-- silently: the new constraints are NOT VALID.

-- Created must be a finite time (an 'infinity' row used to stop every poll).
ALTER TABLE EventQueue ADD CONSTRAINT EventQueue_Created CHECK (isfinite(Created)) NOT VALID;

-- Stamp is always the id of the inserting transaction, whatever the INSERT says: a forged
-- Stamp could hide a row (below the readers' snapshots) or, once deleted, look like a deletion
-- from the future. It never changes afterwards.
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

-- The deletion record: one row per deleting statement, with the distinct Stamps it deleted
-- (Below: every Stamp below it, for TRUNCATE). An instance reads the entries committed since
-- its last read and reports Missed when one names a transaction it had not processed, whether
-- beyond its snapshot or in its in-progress list (a single highest deleted Stamp could not
-- say the latter). Cleanup prunes entries older than the hard maximum age.
CREATE TABLE EventQueueDeleted (
  Deleter xid8        NOT NULL DEFAULT pg_current_xact_id(),
  Below   xid8,
  Stamps  xid8[],
  At      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX EventQueueDeleted_Deleter ON EventQueueDeleted (Deleter);
CREATE INDEX EventQueueDeleted_At ON EventQueueDeleted (At);

-- What the old record (the highest deleted Stamp) said becomes one entry.
INSERT INTO EventQueueDeleted (Stamps)
  SELECT ARRAY[Value::xid8] FROM Properties
   WHERE Key = 'EQDeletedStamp' AND Value ~ '^[0-9]{1,19}$';
DELETE FROM Properties WHERE Key = 'EQDeletedStamp';

CREATE OR REPLACE FUNCTION eventq_record_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO EventQueueDeleted (Stamps)
    SELECT array_agg(DISTINCT Stamp ORDER BY Stamp) FROM eventq_deleted HAVING count(*) > 0;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION eventq_record_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO EventQueueDeleted (Below) VALUES (pg_catalog.pg_current_xact_id());
  RETURN NULL;
END $$;

-- The deletion triggers run as their owner (SECURITY DEFINER, set below), so a
-- name they use must not resolve to a temporary table of the caller: pg_temp last.
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

-- Roles that read events read the deletion record (every poll does); roles that delete events
-- prune it. (schema/postgres-roles.sql grants the same; this keeps an upgraded schema working
-- before it is run again.)
DO $$
DECLARE
  g record;
BEGIN
  FOR g IN SELECT DISTINCT grantee, privilege_type FROM information_schema.role_table_grants
            WHERE table_schema = current_schema() AND table_name = 'eventqueue'
              AND privilege_type IN ('SELECT', 'DELETE') AND grantee <> current_user LOOP
    EXECUTE format('GRANT %s ON EventQueueDeleted TO %I', g.privilege_type, g.grantee);
  END LOOP;
END $$;

-- Cursors now carry options after ';' (see src/postgres/postgres_cursor.h).
CREATE OR REPLACE FUNCTION eventq_cursor_snapshot(cursor text) RETURNS pg_snapshot
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN split_part(split_part(cursor, ';', 1), '|', 1)::pg_snapshot;
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$;

-- Report the rows stored before that break the new rules.
DO $$
DECLARE
  n bigint;
  ids text;
BEGIN
  SELECT count(*), string_agg(Id::text, ', ' ORDER BY Id) FILTER (WHERE rn <= 20)
    INTO n, ids
    FROM (SELECT Id, row_number() OVER (ORDER BY Id) AS rn FROM EventQueue
           WHERE NOT isfinite(Created)) x;
  IF n > 0 THEN
    RAISE WARNING 'eventq migration 0004: % rows of EventQueue have a Created that is not finite '
      '(Ids %): instances refuse them; `eventq verify` lists them; delete them by hand', n, ids;
  END IF;
  SELECT count(*), string_agg(Id::text, ', ' ORDER BY Id) FILTER (WHERE rn <= 20)
    INTO n, ids
    FROM (SELECT Id, row_number() OVER (ORDER BY Id) AS rn FROM EventQueue
           WHERE NOT (RaiseLocally OR RaiseGlobally)) x;
  IF n > 0 THEN
    RAISE WARNING 'eventq migration 0004: % rows of EventQueue are addressed to nobody '
      '(Ids %): instances refuse them; `eventq verify` lists them; delete them by hand', n, ids;
  END IF;
  SELECT count(*), string_agg(Id::text, ', ' ORDER BY Id) FILTER (WHERE rn <= 20)
    INTO n, ids
    FROM (SELECT Id, row_number() OVER (ORDER BY Id) AS rn FROM EventQueue
           WHERE Stamp >= pg_current_xact_id() OR Stamp < '3'::xid8) x;
  IF n > 0 THEN
    RAISE WARNING 'eventq migration 0004: % rows of EventQueue have a Stamp that no transaction '
      'of this server wrote (Ids %): they are not delivered until the server passes it; '
      'delete them by hand', n, ids;
  END IF;
END $$;
