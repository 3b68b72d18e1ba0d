-- 0006: failures. An event that a session's listener gave up on (it threw on every attempt,
-- see session_config::retries) or that a typed listener could not decode: one row per event
-- and listener, for operators (`eventq failures`). The queue moved on past it.
CREATE TABLE EventQueueFailures (
  Id           INTEGER PRIMARY KEY AUTOINCREMENT,
  InstanceName TEXT    NOT NULL,
  SessionName  TEXT    NOT NULL,
  EventId      INTEGER NOT NULL,
  EventType    TEXT    NOT NULL,
  Error        TEXT    NOT NULL,
  Attempts     INTEGER NOT NULL CHECK (Attempts >= 1),
  FailedAt     TEXT    NOT NULL
);
CREATE INDEX EventQueueFailures_FailedAt ON EventQueueFailures (FailedAt);
