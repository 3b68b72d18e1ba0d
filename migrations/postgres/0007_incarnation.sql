-- 0007: nothing to change on PostgreSQL. SQLite's migration 0007 stores a random incarnation in
-- the file for its cursors; a PostgreSQL cursor already names its database's incarnation, the
-- cluster's system identifier and timeline (src/postgres/postgres_cursor.h). Both backends keep
-- the same version numbers, so that "schema 7" means the same on either.
SELECT 1;
