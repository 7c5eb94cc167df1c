-- pg_federation 0.3.0 -> 0.4.0: schema changes of federated tables reach every member
-- (docs/migrations.md). A released upgrade script is never edited: a later change gets a
-- script of its own.
\echo Use "ALTER EXTENSION pg_federation UPDATE TO '0.4.0'" to load this file. \quit

-- A schema change quiesces the table on every member: lock the node's own partition, mark
-- its WAL position, then wait until every member has applied up to each node's mark.
CREATE FUNCTION federation."ddl_quiesce_here"(
	"tbl" TEXT /* & str */
) RETURNS TEXT /* String */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ddl_quiesce_here_wrapper';
CREATE FUNCTION federation."ddl_lagging"(
	"lsn" TEXT /* & str */
) RETURNS TEXT[] /* Vec < String > */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ddl_lagging_wrapper';
REVOKE EXECUTE ON FUNCTION federation.ddl_quiesce_here(text), federation.ddl_lagging(text) FROM PUBLIC;
