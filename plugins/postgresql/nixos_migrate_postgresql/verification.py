"""The checks of the new cluster, before the commit and by `verify`: content, indexes, databases."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.model import Check, Step
from nixos_migrate_postgresql import commit, fingerprint, state
from nixos_migrate_postgresql.cluster import (
    control_data,
    current_dir,
    major_of,
    prefix_of,
    running_pid,
)
from nixos_migrate_postgresql.server import PrivateServer, running


def compare_copy(service: Service, staging: Path, new: PrivateServer, expected: Any) -> list[Check]:
    """Check the copy that `new` serves from `staging` as verify would, against the source's full
    fingerprint `expected` (every row, table by table), while its writes reach the disk: the
    checks, for `record`. Raises when one fails: nothing is committed."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the loading server does not fsync (loading_settings): the copy reaches the disk while it
        # is read back and compared
        flushed = pool.submit(commit.sync, service, staging)
        with service.progress.task("compare the copy with its source, table by table"):
            checks = [Check("server starts", True, "the loading server, before the commit")]
            checks += content_checks(service, new, expected, amcheck_above=fingerprint.SAMPLE_ABOVE)
        flushed.result()
    refuse_failed(service, checks, "the copy failed verification before the commit")
    return checks


def before_commit(service: Service, step: Step, staging: Path, superuser: str) -> None:
    """Start the new cluster on a private server before the commit, update its extensions and
    check it as `verify` would; a failure leaves the data path as it was. This server runs while
    the new cluster is flushed to disk, and `verify` after the commit starts none (see
    `record`). The caller syncs the cluster after it."""
    s = state.settings_of(service)
    # without fsync: its few writes would wait behind the flush of the whole cluster (ext4 orders
    # a journal commit after the data of the files in it); the caller syncs once it stopped
    prefix, no_fsync = prefix_of(s, step.to_version), {"fsync": "off"}
    with running(service, prefix, staging, state.socket(service), s.port, superuser, no_fsync) as server:
        update_extensions(service, server)
        with service.progress.task("verify the new cluster before the commit"):
            checks = [Check("server starts", True, "before the commit")]
            checks += content_checks(service, server, state.expected(service))
    refuse_failed(service, checks, "the new cluster failed verification before the commit")
    record(service, step, staging, checks)


def refuse_failed(service: Service, checks: list[Check], what: str) -> None:
    if failed := [c for c in checks if not c.ok]:
        raise MigrateError(
            f"{what}: " + "; ".join(f"{c.name}: {c.detail}" for c in failed),
            hint=f"nothing was committed; the logs of the private servers are in {service.state_dir / 'logs'}",
        )


def record(service: Service, step: Step, staging: Path, checks: list[Check]) -> None:
    """Record the checks of the stopped staging cluster for `verify` after the commit, with the
    pg_control state that shows it has not run since: the commit renames it and changes no byte,
    so a second server start and read would find the same. Recorded for the path the commit
    gives it; used once (`recorded_checks`)."""
    control = control_data(service.run, prefix_of(state.settings_of(service), step.to_version), staging)
    record = {
        "cluster": str(state.target_dir(service, step)),
        "control": control.identity,
        "checks": [[c.name, c.ok, c.detail] for c in checks],
    }
    state.verified_file(service).write_text(json.dumps(record))


def recorded_checks(service: Service, cluster: Path, major: str) -> list[Check] | None:
    """The checks `before_commit` recorded for `cluster` in this step, if it has not run
    since; used once, so a later `verify` starts the cluster again."""
    recorded = state.verified_file(service)
    if not recorded.exists():
        return None
    record = json.loads(recorded.read_text())
    recorded.unlink()
    if service.step is None or record.get("cluster") != str(cluster):
        return None
    control = control_data(service.run, prefix_of(state.settings_of(service), major), cluster)
    if not control.shut_down or control.identity != record.get("control"):
        return None
    checks = [Check(str(name), bool(ok), str(detail)) for name, ok, detail in record["checks"]]
    return [*checks, Check("not started since", True, f"pg_control unchanged ({control.identity})")]


def update_extensions(service: Service, server: PrivateServer) -> None:
    """`ALTER EXTENSION … UPDATE` where the new major ships a newer version: before the commit,
    because the service's queries may need the new version."""
    from psycopg import sql  # imported when first needed: see server._prefetch_psycopg

    with server.connect("postgres") as conn:
        dbs = [
            str(n) for (n,) in conn.execute("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1").fetchall()
        ]
    for db in dbs:
        with server.connect(db) as conn:
            # no event trigger fires for the update (an audit trigger would log it into the data)
            conn.execute("SET session_replication_role = replica")
            rows = conn.execute(
                "SELECT e.extname FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname"
                " WHERE a.default_version IS DISTINCT FROM e.extversion"
            ).fetchall()
            for (name,) in rows:
                with service.progress.task(f"update extension {name} in {db}"):
                    conn.execute(sql.SQL("ALTER EXTENSION {} UPDATE").format(sql.Identifier(str(name))))


def verify(service: Service) -> list[Check]:
    s = state.settings_of(service)
    found_dir = current_dir(s)
    if found_dir is None:
        return [Check("cluster present", False, f"no cluster in {s.data_dir} or {s.source_dir}")]
    major = major_of(found_dir) or ""
    pid = running_pid(found_dir)
    if pid is not None:
        return [Check("cluster running", True, f"pid {pid}; stop it to verify its content")]
    checks = [Check("cluster present", True, f"PostgreSQL {major} in {found_dir}")]
    verified = recorded_checks(service, found_dir, major)
    if verified is not None:
        return checks + verified
    try:
        server_cm = running(service, prefix_of(s, major), found_dir, state.socket(service), s.port, s.superuser)
        with server_cm as server:
            checks.append(Check("server starts", True, ""))
            checks += content_checks(service, server, state.expected(service))
    except MigrateError as exc:
        checks.append(Check("server starts", False, exc.message))
    return checks


def content_checks(
    service: Service, server: PrivateServer, expected: dict[str, Any] | None, amcheck_above: int | None = None
) -> list[Check]:
    """What verify checks on the running cluster: the content against `expected`, the fingerprint
    taken before the step (read as deep as it was; the objects alone without one), the b-tree
    indexes (those up to `amcheck_above` blocks, or to the sample's limit after a sampled
    fingerprint), the expected databases."""
    s = state.settings_of(service)
    depth: fingerprint.Depth = "shape" if expected is None else expected.get("depth", "full")
    row_hash: fingerprint.RowHash = "text" if expected is None else expected.get("row_hash", "text")
    fp = fingerprint.take(server, s.jobs, depth=depth, row_hash=row_hash)
    checks = compare_expected(expected, fp)
    checks += amcheck(server, fingerprint.SAMPLE_ABOVE if depth == "sample" else amcheck_above)
    if s.expected_databases is not None:
        extra = sorted(set(fp["databases"]) - set(s.expected_databases) - {"template1", "postgres"})
        checks.append(Check("only the expected databases", not extra, ", ".join(extra)))
    return checks


def compare_expected(expected: dict[str, Any] | None, fp: Any) -> list[Check]:
    """The content must equal the fingerprint taken before the step."""
    if expected is None:
        return []
    diffs = fingerprint.differences(expected, fp)
    entries = [v for d in fp["databases"].values() for v in d.get("tables", {}).values()]
    sampled = sum(1 for v in entries if str(v[0]).endswith(" blocks"))
    how = f" ({sampled} large ones by size and a repeatable sample of blocks)" if sampled else ""
    detail = f"{len(fp['databases'])} databases, {len(entries)} tables and sequences{how}"
    return [Check("content equals the fingerprint before the step", not diffs, "; ".join(diffs) or detail)]


# amcheck's SQLSTATEs for damage it found (index_corrupted, data_corrupted); any other error means
# the check could not run on that index, which says nothing about the data
CORRUPTION = ("XX001", "XX002")


def amcheck(server: PrivateServer, max_blocks: int | None = None) -> list[Check]:
    """B-tree structure of every user index amcheck can check (of those up to `max_blocks`, when
    given), with amcheck created in a rolled-back transaction. Only leaf b-tree indexes with storage
    of their own are checked: a partitioned table's index (relkind I) has none, an unlogged or
    temporary one may have none here, an invalid one is not maintained; they are counted and named
    in the detail. An index amcheck refuses (an error that reports no corruption) is counted too,
    never a failure of the data."""
    with server.connect("postgres") as conn:
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'").fetchone()
        dbs = [
            str(n) for (n,) in conn.execute("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1").fetchall()
        ]
    if not available:
        return [Check("amcheck", True, "not available in this build; skipped")]
    checked, too_big, problems = 0, 0, []
    uncheckable: dict[str, int] = {}
    refused: list[str] = []
    for db in dbs:
        with server.connect(db) as conn:
            conn.autocommit = False
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
                indexes = conn.execute(
                    "SELECT c.oid::regclass::text, CASE"
                    "   WHEN c.relkind <> 'i' THEN 'partitioned'"
                    "   WHEN c.relpersistence = 'u' THEN 'unlogged'"
                    "   WHEN c.relpersistence = 't' THEN 'temporary'"
                    "   WHEN NOT (i.indisvalid AND i.indisready) THEN 'invalid' END,"
                    " CASE WHEN c.relkind = 'i' AND c.relpersistence = 'p'"
                    "   THEN pg_relation_size(c.oid) / current_setting('block_size')::int END"
                    " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE a.amname = 'btree'"
                    " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"
                    " AND n.nspname !~ '^pg_temp'"
                ).fetchall()
                for index, why_not, blocks in indexes:
                    if why_not is not None:
                        uncheckable[str(why_not)] = uncheckable.get(str(why_not), 0) + 1
                        continue
                    if max_blocks is not None and int(str(blocks)) > max_blocks:
                        too_big += 1
                        continue
                    try:
                        conn.execute("SAVEPOINT idx")
                        # structure only: the content is compared by the fingerprint already
                        conn.execute("SELECT bt_index_check(%s::regclass, false)", (index,))
                        conn.execute("RELEASE SAVEPOINT idx")
                        checked += 1
                    except Exception as exc:
                        conn.execute("ROLLBACK TO SAVEPOINT idx")
                        message = f"{db}: {index}: {str(exc).strip()}"
                        if getattr(exc, "sqlstate", None) in CORRUPTION:
                            problems.append(message)
                        else:
                            refused.append(message)
            finally:
                conn.rollback()
    detail = f"{checked} indexes"
    if uncheckable:
        kinds = ", ".join(f"{n} {why}" for why, n in sorted(uncheckable.items()))
        detail += f"; not checkable, skipped: {kinds}"
    if refused:
        detail += f"; {len(refused)} amcheck could not check: " + "; ".join(refused[:3])
    if too_big:
        # physical copies: their files are the old ones; a plain `verify` checks them all
        detail += f"; {too_big} larger than {max_blocks} blocks left to a plain `nixos-migrate verify`"
    return [Check("amcheck of b-tree indexes", not problems, "; ".join(problems[:5]) or detail)]
