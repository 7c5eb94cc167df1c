-- Keys of federated tables (docs/keys.md): the sequences that fill their columns, numbered
-- per node by src/table/sequences.rs, and what federation.duplicate_keys() last found.

-- Every sequence that fills a column of a table: an identity or serial column's own sequence
-- (it belongs to the column) and a sequence a column DEFAULT calls nextval() on.
CREATE VIEW federation.column_sequence AS
SELECT a.attrelid AS relid, a.attname AS column_name, a.atttypid::regtype AS column_type,
       s.seqrelid::regclass AS seq, s.seqtypid::regtype AS seq_type,
       s.seqincrement AS increment, s.seqmin AS min_value, s.seqmax AS max_value
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_depend d
  ON d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
 AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum AND d.deptype IN ('a', 'i')
JOIN pg_catalog.pg_sequence s ON s.seqrelid = d.objid
WHERE a.attnum > 0 AND NOT a.attisdropped
UNION
SELECT a.attrelid, a.attname, a.atttypid::regtype, s.seqrelid::regclass, s.seqtypid::regtype,
       s.seqincrement, s.seqmin, s.seqmax
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
JOIN pg_catalog.pg_depend d
  ON d.classid = 'pg_catalog.pg_attrdef'::regclass AND d.objid = ad.oid
 AND d.refclassid = 'pg_catalog.pg_class'::regclass
JOIN pg_catalog.pg_sequence s ON s.seqrelid = d.refobjid
WHERE a.attnum > 0 AND NOT a.attisdropped;

COMMENT ON VIEW federation.column_sequence IS
  'Every sequence that fills a column (identity, serial, DEFAULT nextval()), with its range. '
  'On a federated table each node''s range starts at its node number times 2^48.';
-- It shows only what pg_catalog shows every role; table owners enable() through it.
GRANT SELECT ON federation.column_sequence TO PUBLIC;

-- What federation.duplicate_keys() (and verify()) last found: key values present in more
-- than one node's partition. health() warns while a table has some.
CREATE TABLE federation.key_check (
    relid       regclass PRIMARY KEY REFERENCES federation.federated_table ON DELETE CASCADE,
    checked_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    key         text NOT NULL,      -- the key's columns, as SQL
    duplicates  bigint NOT NULL,    -- key values held by more than one node
    example     text                -- one of them
);
REVOKE ALL ON federation.key_check FROM PUBLIC;
GRANT SELECT ON federation.key_check TO pg_monitor;

CREATE FUNCTION federation.duplicate_keys(tbl regclass DEFAULT NULL)
RETURNS TABLE (table_name text, key text, value text, nodes text[])
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM federation_internal.duplicate_keys_of(tbl::oid) $$;

COMMENT ON FUNCTION federation.duplicate_keys(regclass) IS
  'Key values (the table''s primary key without the node column) held by more than one '
  'node''s partition, of one federated table or all; health() warns while some exist. '
  'Reads this node''s copy of every partition.';
