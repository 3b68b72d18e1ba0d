-- 0007: the file's incarnation, a random id that a copy of this database carries and another
-- database does not. Instances put it into their cursors ("<Id>;db=<incarnation>"): a cursor
-- whose incarnation is not the file's (the file was replaced by another database, or restored
-- from a copy of one) gives Missed once instead of reading another database's Ids as its own.
INSERT INTO Properties (Key, Value) VALUES ('EQIncarnation', lower(hex(randomblob(16))))
  ON CONFLICT (Key) DO NOTHING;
