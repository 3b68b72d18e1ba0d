-- 0009: an index for polls that read only some event types (issue 13, "filtering in the
-- database"). Runs with search_path set to the eventq schema; names are unquoted on purpose.
--
-- When every listener of an instance names its types, a poll reads, beside the rows of the
-- cursor's in-progress transactions, one range of this index per type from the cursor's xmax
-- on, in (Stamp, Id) order, so rows of other types are neither read nor sent. Prefixes
-- ("media.*") are ranges of EventType in bytewise order, hence the "C" collation (in a
-- linguistic collation "media.x" need not sort between "media." and "media/").
CREATE INDEX EventQueue_Type ON EventQueue (EventType COLLATE "C", Stamp, Id);
