-- 0001: the event table, the properties table, and the trigger that records deletions.
-- Runs with search_path set to the eventq schema; names are unquoted on purpose.
CREATE TABLE EventQueue (
  Id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  EventType     text        NOT NULL,
  InstanceData  json        NOT NULL,
  InstanceName  text        NOT NULL,
  RaiseLocally  boolean     NOT NULL,
  RaiseGlobally boolean     NOT NULL,
  Stamp         xid8        NOT NULL DEFAULT pg_current_xact_id(),
  Created       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX EventQueue_Stamp ON EventQueue (Stamp, Id);
CREATE INDEX EventQueue_Created ON EventQueue (Created);

CREATE TABLE Properties (
  Key   text PRIMARY KEY,
  Value text NOT NULL
);

-- Deleting rows (cleanup, or by hand) records the highest deleted Stamp, so that an instance
-- whose cursor had not reached it reports Missed instead of skipping silently.
CREATE FUNCTION eventq_record_deleted() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO Properties (Key, Value)
    SELECT 'EQDeletedStamp', max(Stamp)::text FROM eventq_deleted HAVING count(*) > 0
  ON CONFLICT (Key) DO UPDATE
    SET Value = greatest(Properties.Value::xid8, EXCLUDED.Value::xid8)::text;
  RETURN NULL;
END $$;
CREATE TRIGGER EventQueue_Deleted AFTER DELETE ON EventQueue
  REFERENCING OLD TABLE AS eventq_deleted
  FOR EACH STATEMENT EXECUTE FUNCTION eventq_record_deleted();

-- TRUNCATE has no transition table: every row committed before this transaction may be gone.
CREATE FUNCTION eventq_record_truncated() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
  INSERT INTO Properties (Key, Value) VALUES ('EQDeletedStamp', pg_current_xact_id()::text)
  ON CONFLICT (Key) DO UPDATE
    SET Value = greatest(Properties.Value::xid8, EXCLUDED.Value::xid8)::text;
  RETURN NULL;
END $$;
CREATE TRIGGER EventQueue_Truncated AFTER TRUNCATE ON EventQueue
  FOR EACH STATEMENT EXECUTE FUNCTION eventq_record_truncated();
