-- 0003: signatures. Every row eventq writes carries the id of the key that signed it and its
-- HMAC-SHA256 (64 hex digits, see include/eventq/signing.h). Nullable: rows written by other
-- means, and rows from before this migration, have none, and receivers refuse them.
ALTER TABLE EventQueue ADD COLUMN KeyId text, ADD COLUMN Signature text;
-- A row with neither flag set is meant for nobody, and the signature's flags digit could not
-- describe it: refuse it at INSERT (NOT VALID: rows already stored are left alone).
ALTER TABLE EventQueue ADD CONSTRAINT EventQueue_Flags CHECK (RaiseLocally OR RaiseGlobally)
  NOT VALID;
