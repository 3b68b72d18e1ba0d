-- 0006: failures. An event that a session's listener gave up on (it threw on every attempt,
-- see session_config::retries) or that a typed listener could not decode: one row per event
-- and listener, for operators (`eventq failures`). The queue moved on past it.
CREATE TABLE EventQueueFailures (
  Id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  InstanceName text        NOT NULL,
  SessionName  text        NOT NULL,
  EventId      bigint      NOT NULL,
  EventType    text        NOT NULL,
  Error        text        NOT NULL,
  Attempts     integer     NOT NULL CHECK (Attempts >= 1),
  FailedAt     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX EventQueueFailures_FailedAt ON EventQueueFailures (FailedAt);
