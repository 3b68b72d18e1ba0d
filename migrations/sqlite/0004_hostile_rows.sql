-- 0004: refuse at INSERT what every instance would refuse on reading. A table's CHECK
-- constraints cannot be added in SQLite without rebuilding it, so triggers do it; rows stored
-- before are left alone: instances refuse them (malformed, counted and logged), and
-- `eventq verify` lists them for an operator to delete.
--
-- Those rows are reported, never dropped silently: each message written to the temporary table
-- eventq_migration_warnings is logged as a warning by the library once the migration commits
-- (PostgreSQL's migration does the same with RAISE WARNING).
CREATE TEMP TABLE IF NOT EXISTS eventq_migration_warnings (Message TEXT NOT NULL);
INSERT INTO eventq_migration_warnings (Message)
  SELECT 'eventq migration 0004: ' || count(*) || ' rows of EventQueue are addressed to nobody '
         || '(Ids ' || (SELECT group_concat(Id, ', ') FROM (SELECT Id FROM EventQueue
                         WHERE RaiseLocally = 0 AND RaiseGlobally = 0 ORDER BY Id LIMIT 20))
         || '): instances refuse them; `eventq verify` lists them; delete them by hand'
    FROM EventQueue WHERE RaiseLocally = 0 AND RaiseGlobally = 0 HAVING count(*) > 0;
INSERT INTO eventq_migration_warnings (Message)
  SELECT 'eventq migration 0004: ' || count(*) || ' rows of EventQueue have a Created that is '
         || 'not a time in eventq''s format and range (Ids '
         || (SELECT group_concat(Id, ', ') FROM (SELECT Id FROM EventQueue
              WHERE typeof(Created) <> 'text' OR julianday(Created) IS NULL
                 OR Created < '1678' OR Created >= '2262' ORDER BY Id LIMIT 20))
         || '): instances refuse them; `eventq verify` lists them; delete them by hand'
    FROM EventQueue
   WHERE typeof(Created) <> 'text' OR julianday(Created) IS NULL
      OR Created < '1678' OR Created >= '2262'
  HAVING count(*) > 0;

CREATE TRIGGER EventQueue_Flags BEFORE INSERT ON EventQueue
  WHEN NEW.RaiseLocally = 0 AND NEW.RaiseGlobally = 0
BEGIN
  SELECT RAISE(ABORT, 'EventQueue: a row addressed to nobody (RaiseLocally and RaiseGlobally both 0)');
END;
CREATE TRIGGER EventQueue_Created BEFORE INSERT ON EventQueue
  WHEN typeof(NEW.Created) <> 'text' OR julianday(NEW.Created) IS NULL
    OR NEW.Created < '1678' OR NEW.Created >= '2262'
BEGIN
  SELECT RAISE(ABORT, 'EventQueue: Created must be a UTC time YYYY-MM-DD HH:MM:SS[.SSS] between 1678 and 2261');
END;
