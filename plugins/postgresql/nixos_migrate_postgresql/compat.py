"""What an older major cannot hold: the objects that stop a logical downgrade before it starts.

A dump of a newer cluster loads into an older one only if the older server knows every kind of
object in it; a kind it lacks fails the load half-way (and a restore follows). `blockers` finds
such objects on the running source, per database, so that `check` (and so `plan` and the
pre-switch check) refuses the downgrade naming them, before anything changes.
"""

from __future__ import annotations

from typing import NamedTuple

from nixos_migrate_postgresql.server import PrivateServer


class Feature(NamedTuple):
    since: int
    """The first major that has it: a downgrade below it is blocked."""
    what: str
    query: str
    """One row per object: its name; `{user}` stands for "in a user schema of `n`". Runs only on
    a server of `since` or newer."""


_USER = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'"

FEATURES = (
    Feature(
        12,
        "generated columns",
        "SELECT a.attrelid::regclass || '.' || quote_ident(a.attname) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE a.attgenerated <> '' AND NOT a.attisdropped AND {user}",
    ),
    Feature(
        12,
        "nondeterministic collations",
        "SELECT c.collnamespace::regnamespace || '.' || quote_ident(c.collname) FROM pg_collation c"
        " JOIN pg_namespace n ON n.oid = c.collnamespace WHERE NOT c.collisdeterministic AND {user}",
    ),
    Feature(
        14,
        "lz4-compressed columns",
        "SELECT a.attrelid::regclass || '.' || quote_ident(a.attname) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE a.attcompression = 'l' AND NOT a.attisdropped AND {user}",
    ),
    Feature(
        14,
        "columns of multirange types",
        "SELECT a.attrelid::regclass || '.' || quote_ident(a.attname) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE t.typtype = 'm' AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'm') AND {user}",
    ),
    Feature(
        15,
        "unique indexes with NULLS NOT DISTINCT",
        "SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.indnullsnotdistinct AND {user}",
    ),
    Feature(
        15,
        "views with security_invoker",
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'v' AND c.reloptions::text[] && ARRAY['security_invoker=true', 'security_invoker=on']"
        " AND {user}",
    ),
    Feature(
        15,
        "publications of whole schemas",
        "SELECT p.pubname || ' (schema ' || pn.pnnspid::regnamespace || ')' FROM pg_publication_namespace pn"
        " JOIN pg_publication p ON p.oid = pn.pnpubid",
    ),
    Feature(
        15,
        "publications with row filters or column lists",
        "SELECT p.pubname || ' (' || r.prrelid::regclass || ')' FROM pg_publication_rel r"
        " JOIN pg_publication p ON p.oid = r.prpubid WHERE r.prqual IS NOT NULL OR r.prattrs IS NOT NULL",
    ),
    Feature(
        17,
        "login event triggers",
        "SELECT evtname::text FROM pg_event_trigger WHERE evtevent = 'login'",
    ),
    Feature(
        18,
        "virtual generated columns",
        "SELECT a.attrelid::regclass || '.' || quote_ident(a.attname) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE a.attgenerated = 'v' AND NOT a.attisdropped AND {user}",
    ),
    Feature(
        18,
        "constraints WITHOUT OVERLAPS or with PERIOD",
        "SELECT co.conrelid::regclass || ' ' || quote_ident(co.conname) FROM pg_constraint co"
        " JOIN pg_namespace n ON n.oid = co.connamespace WHERE co.conperiod AND {user}",
    ),
    Feature(
        18,
        "NOT NULL constraints marked NOT VALID",
        "SELECT co.conrelid::regclass || ' ' || quote_ident(co.conname) FROM pg_constraint co"
        " JOIN pg_namespace n ON n.oid = co.connamespace WHERE co.contype = 'n' AND NOT co.convalidated AND {user}",
    ),
)


def blockers(server: PrivateServer, source: int, target: int) -> list[str]:
    """What the cluster of major `source` that `server` serves holds that `target` lacks: one
    line per kind and database, naming the objects (the first few)."""
    wanted = [f for f in FEATURES if target < f.since <= source]
    if not wanted:
        return []
    with server.connect("postgres") as conn:
        dbs = [str(d) for (d,) in conn.execute("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")]
    found = []
    for db in dbs:
        with server.connect(db) as conn:
            for feature in wanted:
                query = feature.query.replace("{user}", _USER)
                names = [str(n) for (n,) in conn.execute(query).fetchall()]
                if names:
                    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
                    found.append(f"{db}: {feature.what} (PostgreSQL {feature.since}+): {', '.join(names[:5])}{more}")
    return found
