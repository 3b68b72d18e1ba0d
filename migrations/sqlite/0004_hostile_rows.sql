-- 0004: refuse at INSERT what every instance would refuse on reading. A table's CHECK
-- constraints cannot be added in SQLite without rebuilding it, so triggers do it; rows stored
-- before are left alone: instances refuse them (malformed, counted and logged), and
-- `eventq verify` lists them for an operator to delete.
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
