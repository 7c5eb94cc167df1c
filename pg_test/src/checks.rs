//! Checks shared by scenario tests.

use crate::Node;

/// Everything a pg_federation call could change in `schema` and in the extension's
/// catalog: relations and their kinds, triggers, catalog rows, publications and their
/// tables, subscriptions. Two equal snapshots mean nothing changed.
pub fn snapshot(node: &Node, schema: &str) -> String {
    let lit = schema.replace('\'', "''");
    let q = format!(
        "SELECT concat_ws(E'\\n',
           (SELECT string_agg(c.relname || ':' || c.relkind::text, ',' ORDER BY c.relname) FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '{lit}'),
           (SELECT string_agg(c.relname || '.' || t.tgname, ',' ORDER BY 1) FROM pg_trigger t
              JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = '{lit}'),
           (SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull::text
                              || ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ',' ORDER BY c.relname, a.attnum)
              FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE n.nspname = '{lit}' AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p')),
           (SELECT 'federated=' || count(*) FROM federation.federated_table),
           (SELECT 'partitions=' || count(*) FROM federation.partition),
           (SELECT 'nodes=' || count(*) FROM federation.node),
           (SELECT string_agg(pubname || ':' || coalesce(tablename, ''), ',' ORDER BY 1)
              FROM pg_publication p LEFT JOIN pg_publication_tables t USING (pubname)),
           (SELECT string_agg(subname, ',' ORDER BY 1) FROM pg_subscription))"
    );
    node.scalar(&q).unwrap_or_default()
}

/// Row count and an order-independent digest of a table's rows (or a query's).
pub fn digest(node: &Node, relation: &str) -> (i64, String) {
    let r = node.query(&format!(
        "SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '') FROM (SELECT md5(t::text) AS h FROM {relation} t) s"
    ));
    (
        r[0][0].as_deref().unwrap().parse().unwrap(),
        r[0][1].clone().unwrap_or_default(),
    )
}
