-- 0003: signatures. Every row eventq writes carries the id of the key that signed it and its
-- HMAC-SHA256 (64 hex digits, see include/eventq/signing.h). Nullable: rows written by other
-- means, and rows from before this migration, have none, and receivers refuse them.
ALTER TABLE EventQueue ADD COLUMN KeyId TEXT;
ALTER TABLE EventQueue ADD COLUMN Signature TEXT;
