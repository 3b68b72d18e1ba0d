-- 0002: the instance registry, database-wide task leases, and the operator views.
CREATE TABLE EventQueueInstances (
  Name       TEXT    PRIMARY KEY NOT NULL,
  Host       TEXT    NOT NULL,
  Pid        INTEGER NOT NULL,
  Version    TEXT    NOT NULL,
  Token      TEXT    NOT NULL,
  Started    TEXT    NOT NULL,
  Heartbeat  TEXT    NOT NULL,
  LeaseUntil TEXT    NOT NULL
);

CREATE TABLE EventQueueTasks (
  Name       TEXT PRIMARY KEY NOT NULL,
  Holder     TEXT,
  LeaseUntil TEXT,
  LastRun    TEXT,
  LastResult TEXT
);

-- Instances that ran before the registry existed: dead since now, so that cleanup removes their
-- cursors once they stay away longer than the hard maximum age.
INSERT INTO EventQueueInstances (Name, Host, Pid, Version, Token, Started, Heartbeat, LeaseUntil)
  SELECT substr(Key, 9), '', 0, '', '', strftime('%Y-%m-%d %H:%M:%f', 'now'),
         strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now')
  FROM Properties WHERE Key LIKE 'EQStamp\_%' ESCAPE '\';

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

CREATE VIEW EventQueueStats AS
SELECT EventType,
       count(*) AS Rows,
       min(Created) AS Oldest,
       max(Created) AS Newest,
       min(Id) AS MinId,
       max(Id) AS MaxId
FROM EventQueue GROUP BY EventType;
