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
--   eventq_app       application instances: raise (INSERT) and read events; register, renew and
--                    release their own lease and store their own cursor 'EQStamp_<instance>',
--                    only through the functions of migration 0008, which check the lease token
--                    (stored hashed): no direct INSERT, UPDATE or DELETE on the registry, the
--                    task leases or Properties, so an instance cannot move another's cursor,
--                    renew or expire another's lease, or touch the cleanup task. No DELETE or
--                    UPDATE on events, no access to the 'EQSecret' row: give the instances their
--                    secret by option or EVENTQ_SECRET (with the secret in the database an
--                    instance must read it, and then whoever holds the role can forge events).
--   eventq_operator  read-only: every table, except the 'EQSecret' row; and it may ask one
--                    instance to resync or replay (EventQueueControl).
--   eventq_cleanup   the cleanup job: read and DELETE events, plus its own lease and cursor row
--                    (opening a queue registers its instance name), the cleanup task lease, and
--                    the removal of instances dead longer than the hard maximum age. The
--                    deletion triggers record what it deletes with their owner's rights
--                    (SECURITY DEFINER, set below).
--
-- Then give people and services LOGIN roles that are members of one group, e.g.
--   CREATE ROLE web1 LOGIN PASSWORD '...' IN ROLE eventq_app;
--
-- None of the three may migrate the schema: after an upgrade of eventq, open a queue once with
-- the owner's role (or run `eventq migrate` as the owner) before the instances start; they
-- refuse to open a schema with pending migrations, saying so.
--
-- Rows in Properties are filtered by row-level security (reads); writes to cursor rows go
-- through eventq_store_cursor() only.
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

-- The instance registry: every role reads it (tokens are stored hashed). Instances (the
-- cleanup tool opens one too) register, renew and release their lease through the functions
-- below, which check the token as the schema's owner; the direct rights that earlier versions
-- of this script granted are taken back. Cleanup removes instances dead longer than the hard
-- maximum age.
GRANT SELECT ON EventQueueInstances, EventQueueTasks TO eventq_app, eventq_operator, eventq_cleanup;
REVOKE INSERT, UPDATE ON EventQueueInstances FROM eventq_app, eventq_cleanup;
GRANT DELETE ON EventQueueInstances TO eventq_cleanup;
-- Task leases (one cleanup per database at a time), through functions that only cleanup may
-- call: an instance under eventq_app cannot take the cleanup lease nor move LastRun (which
-- would disable cleanup). Such an instance's scheduled cleanup is refused, logged and counted
-- (metrics::cleanup_errors): give it options::cleanup_interval = 0 and run `eventq cleanup`
-- under eventq_cleanup from a scheduler instead.
REVOKE INSERT, UPDATE ON EventQueueTasks FROM eventq_app, eventq_cleanup;
-- The functions of migration 0008 run as their owner (SECURITY DEFINER, search_path pinned):
-- only the roles that need each may call it.
REVOKE ALL ON FUNCTION eventq_claim_instance(text, text, bigint, text, text, bigint, bigint),
                       eventq_renew_instance(text, text, bigint, text),
                       eventq_release_instance(text, text),
                       eventq_store_cursor(text, text, text),
                       eventq_acquire_task(text, text, bigint, bigint),
                       eventq_release_task(text, text, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION eventq_claim_instance(text, text, bigint, text, text, bigint, bigint),
                          eventq_renew_instance(text, text, bigint, text),
                          eventq_release_instance(text, text),
                          eventq_store_cursor(text, text, text) TO eventq_app, eventq_cleanup;
GRANT EXECUTE ON FUNCTION eventq_acquire_task(text, text, bigint, bigint),
                          eventq_release_task(text, text, boolean, text) TO eventq_cleanup;
-- Operator requests to one instance (eventq resync / replay, since version 5): operators
-- write them, instances pick them up and acknowledge them.
GRANT SELECT ON EventQueueControl TO eventq_app, eventq_operator, eventq_cleanup;
GRANT INSERT ON EventQueueControl TO eventq_operator, eventq_cleanup;
GRANT UPDATE ON EventQueueControl TO eventq_app, eventq_cleanup;
-- Events a session gave up on: instances record them, every role reads them.
GRANT SELECT ON EventQueueFailures TO eventq_app, eventq_operator, eventq_cleanup;
GRANT INSERT ON EventQueueFailures TO eventq_app, eventq_cleanup;
-- Cleanup deletes failure records older than the hard maximum age.
GRANT DELETE ON EventQueueFailures TO eventq_cleanup;
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
-- Cursors are written by eventq_store_cursor() alone, which checks the lease token: the key
-- names an instance, not a database role (one role usually serves every instance), so a policy
-- on the key could not keep an instance off another's cursor.
REVOKE INSERT, UPDATE ON Properties FROM eventq_app, eventq_cleanup;
ALTER TABLE Properties ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS eventq_read ON Properties;
CREATE POLICY eventq_read ON Properties FOR SELECT
  TO eventq_app, eventq_operator, eventq_cleanup
  USING (Key <> 'EQSecret');

DROP POLICY IF EXISTS eventq_cursor_insert ON Properties;
DROP POLICY IF EXISTS eventq_cursor_update ON Properties;
-- Cleanup replaces the cursor of an instance dead longer than the hard maximum age by a marker
-- 'removed;at=<UTC time>' (the instance, if it comes back, reports Missed), and deletes markers
-- ten hard maximum ages old. It can write no other value, and no other key.
GRANT DELETE, UPDATE (Value) ON Properties TO eventq_cleanup;
DROP POLICY IF EXISTS eventq_cursor_delete ON Properties;
CREATE POLICY eventq_cursor_delete ON Properties FOR DELETE
  TO eventq_cleanup
  USING (Key LIKE 'EQStamp\_%');
DROP POLICY IF EXISTS eventq_cursor_remove ON Properties;
CREATE POLICY eventq_cursor_remove ON Properties FOR UPDATE
  TO eventq_cleanup
  USING (Key LIKE 'EQStamp\_%')
  WITH CHECK (Key LIKE 'EQStamp\_%' AND Value LIKE 'removed;at=%');
