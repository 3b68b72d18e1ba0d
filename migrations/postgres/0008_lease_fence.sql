-- 0008: the instance lease fences cursor writes, and is the security boundary between instances.
-- Runs with search_path set to the eventq schema; names are unquoted on purpose.
--
-- Every write an instance makes to the registry (EventQueueInstances), to its cursor row
-- ('EQStamp_<name>' in Properties) and to the task leases (EventQueueTasks) goes through the
-- functions below, which run as their owner (SECURITY DEFINER, search_path pinned) and check the
-- lease token. schema/postgres-roles.sql then revokes the direct UPDATE/INSERT rights, so that
-- one instance can no longer move another's cursor, renew or expire its lease, keep a fake
-- instance live, or move the cleanup task's LastRun.
--
-- Tokens are stored hashed (sha256, built in since PostgreSQL 11), so that reading the registry,
-- which every role may, does not give a token away. A process of an older version that runs
-- while this migration is applied stops matching its row: its renewals fail and it registers
-- again once its lease expires.

UPDATE EventQueueInstances SET Token = encode(sha256(convert_to(Token, 'UTF8')), 'hex');

-- The server's view of the client that holds the name (NULL over a Unix socket): a take-over of
-- a dead process's name (same host, process gone) must come from the same client address, so a
-- host name and pid read from the registry are not enough to take a live name.
ALTER TABLE EventQueueInstances ADD COLUMN ClientAddr inet;

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
