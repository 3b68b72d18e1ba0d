-- 0008: nothing to change on SQLite. PostgreSQL's migration 0008 moves the registry, cursor
-- and task writes into functions that check the lease token, for its least-privilege roles; an
-- SQLite file has no roles (whoever can write the file can write every row), and the cursor
-- fence is one statement in the library (src/sqlite/sqlite_storage.cpp). Both backends keep
-- the same version numbers, so that "schema 8" means the same on either.
SELECT 1;
