-- 0001: the event table, the properties table and the schema history.
CREATE TABLE EventQueue (
  Id            INTEGER PRIMARY KEY AUTOINCREMENT,
  EventType     TEXT    NOT NULL,
  InstanceData  TEXT    NOT NULL,
  InstanceName  TEXT    NOT NULL,
  RaiseLocally  INTEGER NOT NULL CHECK (RaiseLocally IN (0, 1)),
  RaiseGlobally INTEGER NOT NULL CHECK (RaiseGlobally IN (0, 1)),
  Stamp         INTEGER GENERATED ALWAYS AS (Id) VIRTUAL,
  Created       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE INDEX EventQueue_Created ON EventQueue (Created);

CREATE TABLE Properties (
  Key   TEXT PRIMARY KEY NOT NULL,
  Value TEXT NOT NULL
);
