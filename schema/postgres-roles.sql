-- Least-privilege roles for an eventq schema on PostgreSQL (see docs/security.md).
--
-- Run it with psql as the schema's owner (or a superuser), after the schema exists (open a queue
-- once as the owner, or run schema/postgres.sql), and again after every eventq upgrade:
--
--   psql -X -v ON_ERROR_STOP=1 -v schema=public -f schema/postgres-roles.sql "postgresql://owner@host/db"
--
-- `schema` defaults to public. It creates three NOLOGIN group roles when they are missing (that
-- needs CREATEROLE; create them beforehand otherwise) and grants them what each needs:
--
--   eventq_app       application instances: raise (INSERT) and read events; read, create and
--                    advance cursor rows 'EQStamp_<instance>'. No DELETE or UPDATE on events, no
--                    access to the 'EQSecret' row: give the instances their secret by option or
--                    EVENTQ_SECRET (with the secret in the database an instance must read it,
--                    and then whoever holds the role can forge events).
--   eventq_operator  read-only: every table, except the 'EQSecret' row; and it may ask one
--                    instance to resync or replay (EventQueueControl).
--   eventq_cleanup   the cleanup job: read and DELETE events, plus its own cursor row (opening
--                    a queue records one for its instance name). The deletion triggers record
--                    what it deletes with their owner's rights (SECURITY DEFINER, set below).
--
-- Then give people and services LOGIN roles that are members of one group, e.g.
--   CREATE ROLE web1 LOGIN PASSWORD '...' IN ROLE eventq_app;
--
-- None of the three may migrate the schema: after an upgrade of eventq, open a queue once with
-- the owner's role (or run `eventq migrate` as the owner) before the instances start; they
-- refuse to open a schema with pending migrations, saying so.
--
-- Rows in Properties are filtered by row-level security. Keys that later features write (the
-- instance registry and heartbeats) need their own policies here when those features land.
SET client_min_messages = warning;
\if :{?schema}
\else
  \set schema public
\endif

SELECT format('CREATE ROLE %I NOLOGIN', r)
  FROM unnest(ARRAY['eventq_app', 'eventq_operator', 'eventq_cleanup']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec

SET search_path TO :"schema";

GRANT USAGE ON SCHEMA :"schema" TO eventq_app, eventq_operator, eventq_cleanup;
GRANT SELECT ON EventQueueSchema TO eventq_app, eventq_operator, eventq_cleanup;

-- Events: every role reads; only instances insert; only cleanup deletes. Nobody updates.
GRANT SELECT ON EventQueue TO eventq_app, eventq_operator, eventq_cleanup;
GRANT INSERT ON EventQueue TO eventq_app;
GRANT DELETE ON EventQueue TO eventq_cleanup;
-- The deletion record: every instance reads it; the triggers write it (as their owner);
-- cleanup prunes entries past the hard maximum age.
GRANT SELECT ON EventQueueDeleted TO eventq_app, eventq_operator, eventq_cleanup;
GRANT DELETE ON EventQueueDeleted TO eventq_cleanup;
SELECT format('GRANT USAGE ON SEQUENCE %s TO eventq_app',
              pg_get_serial_sequence(:'schema' || '.eventqueue', 'id')) \gexec

-- The instance registry: instances (the cleanup tool opens one too) record themselves and
-- renew their lease; cleanup removes instances dead longer than the hard maximum age.
GRANT SELECT ON EventQueueInstances, EventQueueTasks TO eventq_app, eventq_operator, eventq_cleanup;
GRANT INSERT, UPDATE ON EventQueueInstances TO eventq_app, eventq_cleanup;
GRANT DELETE ON EventQueueInstances TO eventq_cleanup;
-- Task leases (one cleanup per database at a time). An instance under eventq_app may take the
-- cleanup lease on its schedule, but its DELETE is refused: it logs and counts that
-- (metrics::cleanup_errors). Give such instances options::cleanup_interval = 0 and run
-- `eventq cleanup` under eventq_cleanup from a scheduler instead.
GRANT INSERT, UPDATE ON EventQueueTasks TO eventq_app, eventq_cleanup;
-- Operator requests to one instance (eventq resync / replay, since version 5): operators
-- write them, instances pick them up and acknowledge them.
GRANT SELECT ON EventQueueControl TO eventq_app, eventq_operator, eventq_cleanup;
GRANT INSERT ON EventQueueControl TO eventq_operator, eventq_cleanup;
GRANT UPDATE ON EventQueueControl TO eventq_app, eventq_cleanup;
-- Events a session gave up on: instances record them, every role reads them.
GRANT SELECT ON EventQueueFailures TO eventq_app, eventq_operator, eventq_cleanup;
GRANT INSERT ON EventQueueFailures TO eventq_app, eventq_cleanup;
SELECT format('GRANT USAGE ON SEQUENCE %s TO eventq_app, eventq_cleanup',
              pg_get_serial_sequence(:'schema' || '.eventqueuefailures', 'id')) \gexec
-- The operator views.
GRANT SELECT ON EventQueueLag, EventQueueStats TO eventq_app, eventq_operator, eventq_cleanup;

-- The deletion triggers write EventQueueDeleted, which cleanup may not write itself: they run
-- with their owner's rights instead (their search_path is pinned to the schema, then pg_temp,
-- as SECURITY DEFINER requires: a temporary table cannot stand in for the record).
ALTER FUNCTION eventq_record_deleted() SECURITY DEFINER;
ALTER FUNCTION eventq_record_truncated() SECURITY DEFINER;
REVOKE ALL ON FUNCTION eventq_record_deleted(), eventq_record_truncated() FROM PUBLIC;

-- Properties: the owner sees everything (RLS does not apply to it); the roles see what the
-- policies below let through.
GRANT SELECT ON Properties TO eventq_app, eventq_operator, eventq_cleanup;
GRANT INSERT, UPDATE ON Properties TO eventq_app, eventq_cleanup;
ALTER TABLE Properties ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS eventq_read ON Properties;
CREATE POLICY eventq_read ON Properties FOR SELECT
  TO eventq_app, eventq_operator, eventq_cleanup
  USING (Key <> 'EQSecret');

-- Cursors only. An instance could still move another instance's cursor: the key names an
-- instance, not a database role (one role usually serves every instance).
DROP POLICY IF EXISTS eventq_cursor_insert ON Properties;
CREATE POLICY eventq_cursor_insert ON Properties FOR INSERT
  TO eventq_app, eventq_cleanup
  WITH CHECK (Key LIKE 'EQStamp\_%');
-- Cleanup removes the cursors of instances dead longer than the hard maximum age.
GRANT DELETE ON Properties TO eventq_cleanup;
DROP POLICY IF EXISTS eventq_cursor_delete ON Properties;
CREATE POLICY eventq_cursor_delete ON Properties FOR DELETE
  TO eventq_cleanup
  USING (Key LIKE 'EQStamp\_%');
DROP POLICY IF EXISTS eventq_cursor_update ON Properties;
CREATE POLICY eventq_cursor_update ON Properties FOR UPDATE
  TO eventq_app, eventq_cleanup
  USING (Key LIKE 'EQStamp\_%')
  WITH CHECK (Key LIKE 'EQStamp\_%');
