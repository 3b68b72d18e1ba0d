-- 0005: instances report their counters, and operators send one instance a request.
-- Counters: the instance's stats() as a JSON object, written at each lease renewal.
ALTER TABLE EventQueueInstances ADD COLUMN Counters TEXT;

-- Requests from operators to one instance (eventq resync / eventq replay), picked up by that
-- instance at its next lease renewal and acknowledged with their result.
CREATE TABLE EventQueueControl (
  Id          INTEGER PRIMARY KEY AUTOINCREMENT,
  Instance    TEXT NOT NULL,
  Action      TEXT NOT NULL CHECK (Action IN ('resync', 'replay')),
  Since       TEXT,
  RequestedBy TEXT NOT NULL,
  Requested   TEXT NOT NULL,
  PickedUp    TEXT,
  Done        TEXT,
  Result      TEXT
);
CREATE INDEX EventQueueControl_Pending ON EventQueueControl (Instance) WHERE PickedUp IS NULL;
