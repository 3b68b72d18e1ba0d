-- 0009: an index for polls that read only some event types (issue 13, "filtering in the
-- database"). When every listener of an instance names its types, the poll reads those types
-- alone: one range of this index per type, in Id order, so rows of other types (another
-- application's, in a shared queue) are neither read nor parsed. The cursor still passes them.
CREATE INDEX EventQueue_Type ON EventQueue (EventType, Id);
