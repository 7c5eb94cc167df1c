-- pg_federation 0.1.0 -> 0.2.0. A released upgrade script is never edited: a later change
-- gets a script of its own (pg_federation--0.2.0--0.3.0.sql, ...).
\echo Use "ALTER EXTENSION pg_federation UPDATE TO '0.2.0'" to load this file. \quit

-- status() and health() plan a query whose estimated cost crosses jit_above_cost: with JIT
-- each call took 1.5 to 3 s, without it 5 ms. Monitoring polls them every few seconds.
ALTER FUNCTION federation.status() SET jit = off;
ALTER FUNCTION federation.health() SET jit = off;
