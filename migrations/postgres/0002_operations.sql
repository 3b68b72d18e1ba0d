-- 0002: the instance registry, database-wide task leases, and the operator views.
-- Runs with search_path set to the eventq schema; names are unquoted on purpose.
CREATE TABLE EventQueueInstances (
  Name       text        PRIMARY KEY,
  Host       text        NOT NULL,
  Pid        integer     NOT NULL,
  Version    text        NOT NULL,
  Token      text        NOT NULL,
  Started    timestamptz NOT NULL,
  Heartbeat  timestamptz NOT NULL,
  LeaseUntil timestamptz NOT NULL
);

CREATE TABLE EventQueueTasks (
  Name       text PRIMARY KEY,
  Holder     text,
  LeaseUntil timestamptz,
  LastRun    timestamptz,
  LastResult text
);

-- Instances that ran before the registry existed: dead since now, so that cleanup removes their
-- cursors once they stay away longer than the hard maximum age.
INSERT INTO EventQueueInstances (Name, Host, Pid, Version, Token, Started, Heartbeat, LeaseUntil)
  SELECT substr(Key, 9), '', 0, '', '', now(), now(), now()
  FROM Properties WHERE Key LIKE 'EQStamp\_%';

-- The snapshot an instance's cursor has fully processed: the cursor itself, or its first part
-- while it pages through a backlog ('prev|target|stamp:id'). NULL for a cursor that is not a
-- snapshot (edited by hand), instead of an error that would break the views.
CREATE FUNCTION eventq_cursor_snapshot(cursor text) RETURNS pg_snapshot
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN split_part(cursor, '|', 1)::pg_snapshot;
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$;

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

CREATE VIEW EventQueueStats AS
SELECT EventType,
       count(*) AS Rows,
       min(Created) AS Oldest,
       max(Created) AS Newest,
       min(Id) AS MinId,
       max(Id) AS MaxId
FROM EventQueue GROUP BY EventType;
