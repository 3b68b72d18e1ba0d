-- 0005: instances report their counters, and operators send one instance a request.
-- Counters: the instance's stats() as a JSON object, written at each lease renewal.
ALTER TABLE EventQueueInstances ADD COLUMN Counters text;

-- Requests from operators to one instance (eventq resync / eventq replay), picked up by that
-- instance at its next lease renewal and acknowledged with their result.
CREATE TABLE EventQueueControl (
  Id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  Instance    text        NOT NULL,
  Action      text        NOT NULL CHECK (Action IN ('resync', 'replay')),
  Since       timestamptz,
  RequestedBy text        NOT NULL,
  Requested   timestamptz NOT NULL DEFAULT now(),
  PickedUp    timestamptz,
  Done        timestamptz,
  Result      text
);
CREATE INDEX EventQueueControl_Pending ON EventQueueControl (Instance) WHERE PickedUp IS NULL;
