"""Logical copies: a dump of the server the data is at, loaded into a fresh data directory of
another version (every downgrade; upgrades with `method = "logical"`).

The copy is built beside the data directory (same filesystem, a hidden name). While the dump
runs, the source server's rows are hashed in full on connections of their own, so that the check
before the step need only read the sample the backup keeps; the copy, on its server started
again, is compared with that in full, and the source with the backup's fingerprint (at its
depth); only then does the copy replace the data directory (two renames). A failure anywhere
leaves the data directory as it was. What the older version cannot hold (a data type or
collation it lacks) is named before anything is loaded.

The dump is written by the newer version's dump tool (it knows everything the newer server
has); its first line may be the "sandbox mode" comment (mariadb-dump from 10.5.25, 10.11.8,
11.x), which older clients reject: it is dropped on the way. Accounts travel as `CREATE USER` +
`GRANT` statements read from the source (portable between the two families, unlike the `mysql`
tables), loaded after the data, then `FLUSH PRIVILEGES`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.model import Check, Step
from nixos_migrate.runner import CommandRunner, Identity
from nixos_migrate_mysql import content, installation, record, rowfiles, versions
from nixos_migrate_mysql.server import Server, running

_SANDBOX = re.compile(rb"^/\*M?!999999\\- enable the sandbox mode \*/\s*\n")
#: data types and the series that introduced them (MariaDB): an older target cannot hold them
_NEW_TYPES = {"inet6": (10, 5), "uuid": (10, 7), "inet4": (10, 10), "vector": (11, 7)}
_CHUNK = 1 << 20


def staging_dir(data_dir: Path) -> Path:
    return data_dir.parent / f".{data_dir.name}.nixos-migrate-staging"


def replaced_dir(data_dir: Path) -> Path:
    return data_dir.parent / f".{data_dir.name}.nixos-migrate-replaced"


def rows_dir(data_dir: Path) -> Path:
    return data_dir.parent / f".{data_dir.name}.nixos-migrate-rows"


def clear_leftovers(data_dir: Path) -> None:
    """What an interrupted copy left beside the data directory."""
    for path in (staging_dir(data_dir), replaced_dir(data_dir), rows_dir(data_dir)):
        shutil.rmtree(path, ignore_errors=True)


#: the end of time of a system-versioned row (its row_end while it is current), before and from 11.5
END_OF_TIME_2038 = b"'2038-01-19 03:14:07.999999')"
END_OF_TIME_2106 = b"'2106-02-07 06:28:15.999999')"
_HISTORY_INSERT = re.compile(rb"^INSERT INTO `(?:[^`]|``)+` \(.*row_start, row_end\) VALUES ")


def _write_all(sink: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(sink, view) :]


def dump_filter(end_of_time: bool) -> Callable[[int, int], None]:
    """A pipeline filter for the dump on its way to an older client: the sandbox-mode comment
    dropped; with `end_of_time`, the row_end of current rows of system-versioned tables (the last
    value of each tuple of their history INSERTs, which `--dump-history` writes with the column
    list `…, row_start, row_end)`, a tuple a line) moved from 11.5's end of time to the one before."""

    def run(source: int, sink: int) -> None:
        head = b""
        while b"\n" not in head and len(head) < 4096:
            chunk = os.read(source, 4096)
            if not chunk:
                break
            head += chunk
        head = _SANDBOX.sub(b"", head, count=1)
        if not end_of_time:
            _write_all(sink, head)
            while chunk := os.read(source, _CHUNK):
                _write_all(sink, chunk)
            return
        with os.fdopen(os.dup(source), "rb", buffering=_CHUNK) as rest:
            pending, history = head, False
            for line in rest:
                if pending:
                    line, pending = pending + line, b""
                history = history or bool(_HISTORY_INSERT.match(line))
                if history:  # the statement goes on over lines, one tuple each, until `);`
                    line = line.replace(b"," + END_OF_TIME_2106, b"," + END_OF_TIME_2038)
                    history = not line.rstrip().endswith(b");")
                _write_all(sink, line)
            _write_all(sink, pending)

    return run


def initialize(service: Service, version: str, data_dir: Path) -> None:
    """A fresh data directory of `version` (the install script of MariaDB and MySQL 5.6; the
    server's `--initialize-insecure` from MySQL 5.7)."""
    s = installation.settings_of(service)
    root = installation.prefix(s, version)
    defaults = f"--defaults-file={s.config_file}" if s.config_file else "--no-defaults"
    tmp = service.private_dir(service.state_dir / "run")
    argv: list[str | Path]
    if versions.is_mariadb(version) or versions.key(version) < (5, 7):
        argv = [installation.tool(root, "install-db"), defaults, f"--basedir={root}", f"--datadir={data_dir}"]
        argv += [f"--user={service.run.identity.name}", "--skip-name-resolve", f"--tmpdir={tmp}"]
        if versions.is_mariadb(version):
            argv.append("--skip-test-db")
    else:
        argv = [installation.tool(root, "server"), defaults, "--initialize-insecure", f"--basedir={root}"]
        argv += [f"--datadir={data_dir}", f"--tmpdir={tmp}"]
    service.run.run(argv)


def accounts(source: Server, service_user: str) -> list[str]:
    """CREATE USER / CREATE ROLE and GRANT statements of every account a fresh install lacks."""
    statements: list[str] = []
    fresh = content.INSTALL_ACCOUNTS | {service_user}
    has_roles = bool(source.query("SHOW COLUMNS FROM mysql.user LIKE 'is_role'"))
    columns = "User, Host, is_role" if has_roles else "User, Host, 'N'"
    rows = [(str(u), str(h), str(r)) for u, h, r in source.query(f"SELECT {columns} FROM mysql.user")]
    for user, host, is_role in rows:
        if user in fresh:
            continue
        quoted = f"'{user}'" if is_role == "Y" else f"'{user}'@'{host}'"
        if is_role == "Y":
            statements.append(f"CREATE ROLE IF NOT EXISTS {quoted}")
        else:
            create = str(source.value(f"SHOW CREATE USER {quoted}"))
            statements.append(re.sub(r"^CREATE USER ", "CREATE USER IF NOT EXISTS ", create))
    for user, host, is_role in rows:
        if user in fresh:
            continue
        quoted = f"'{user}'" if is_role == "Y" else f"'{user}'@'{host}'"
        statements += [str(r[0]) for r in source.query(f"SHOW GRANTS FOR {quoted}")]
    return statements


def _history_tables(source: Server) -> list[str]:
    """System-versioned tables that hold history rows."""
    found = []
    for schema, name in source.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'SYSTEM VERSIONED'"
    ):
        qualified = f"{content.ident(str(schema))}.{content.ident(str(name))}"
        total = source.value(f"SELECT COUNT(*) FROM {qualified} FOR SYSTEM_TIME ALL")
        current = source.value(f"SELECT COUNT(*) FROM {qualified}")
        if total != current:
            found.append(f"{schema}.{name}")
    return found


def carries_history(dump: Path, target_version: str) -> bool:
    """Whether history rows can travel: the dump tool writes them (`--dump-history`, 10.11+) and
    the target takes them (`system_versioning_insert_history`, MariaDB 10.11+)."""
    if not versions.is_mariadb(target_version) or versions.key(target_version) < (10, 11):
        return False
    help_text = CommandRunner(Identity.lookup(None)).run([dump, "--help"], check=False).output
    return "--dump-history" in help_text


def unsupported(source: Server, target_version: str, dump: Path) -> list[str]:
    """Objects of the source that a server of `target_version` cannot hold, named."""
    found = []
    if not carries_history(dump, target_version):
        found += [f"the history rows of system-versioned table {t}" for t in _history_tables(source)]
    if not versions.is_mariadb(target_version):
        return found
    target_key = versions.key(target_version)
    for schema, table, column, kind in source.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS"
        f" WHERE TABLE_SCHEMA {content.NOT_SYSTEM}"
    ):
        since = _NEW_TYPES.get(str(kind).lower())
        if since is not None and since > target_key:
            found.append(f"column {schema}.{table}.{column} of type {kind} (MariaDB {since[0]}.{since[1]}+)")
    return found


def _refusal(target_version: str, objects: list[str]) -> str:
    more = f" (and {len(objects) - 10} more)" if len(objects) > 10 else ""
    return f"{versions.label(target_version)} cannot hold: " + "; ".join(objects[:10]) + more


def precheck(service: Service, step: Step) -> Check:
    """Before anything changes: the source server, started on the data, names what the target
    version cannot hold (the copy checks the target's collations again once it runs). When it can
    hold all, the same server takes the fingerprint the step's backup keeps (record.py), so that
    the backup starts no server of its own."""
    s = installation.settings_of(service)
    source_version = step.from_version or ""
    dump = installation.tool(installation.prefix(s, source_version), "dump")
    expected = None
    with running(service, source_version, s.data_dir, name="check", read_only=True) as source:
        objects = unsupported(source, step.to_version, dump)
        if not objects:
            with service.progress.task(f"fingerprint of {versions.label(source_version)}'s data"):
                sample = installation.sampled(s, step)
                expected = content.fingerprint(source, service.run.identity.name, s.jobs, sample)
    name = f"{versions.label(step.to_version)} can hold every object"
    if objects:
        return Check(name, False, _refusal(step.to_version, objects) + "; " + HINT)
    if expected is not None:
        record.keep_fingerprint(service, s.data_dir, step_key(step), expected)
    return Check(name, True, "no data type, collation or history it lacks")


def step_key(step: Step) -> str:
    return f"{step.from_version}->{step.to_version}"


HINT = (
    "change or drop these objects on the newer version first, or restore the backup taken before the upgrade"
    " (`nixos-migrate backups`, `restore`)"
)


def missing_collations(source: Server, target: Server) -> list[str]:
    """Columns, tables and databases whose collation the target server does not have."""
    have = {str(r[0]) for r in target.query("SELECT COLLATION_NAME FROM information_schema.COLLATIONS")}
    used = source.query(
        "SELECT CONCAT('database ', SCHEMA_NAME), DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA"
        f" WHERE SCHEMA_NAME {content.NOT_SYSTEM}"
        " UNION ALL SELECT CONCAT('table ', TABLE_SCHEMA, '.', TABLE_NAME), TABLE_COLLATION"
        f" FROM information_schema.TABLES WHERE TABLE_SCHEMA {content.NOT_SYSTEM} AND TABLE_COLLATION IS NOT NULL"
        " UNION ALL SELECT CONCAT('column ', TABLE_SCHEMA, '.', TABLE_NAME, '.', COLUMN_NAME), COLLATION_NAME"
        f" FROM information_schema.COLUMNS WHERE TABLE_SCHEMA {content.NOT_SYSTEM} AND COLLATION_NAME IS NOT NULL"
    )
    return [f"{what} (collation {collation})" for what, collation in used if str(collation) not in have]


def copy(service: Service, from_version: str, to_version: str, expected: dict[str, str], sample: bool) -> None:
    """Dump the data of `from_version`, load it into a fresh data directory of `to_version`,
    compare it in full with the source as read during the dump, the source with `expected` (the
    backup's fingerprint; `sample`: of that depth), and put it in place of the data directory."""
    s = installation.settings_of(service)
    data_dir = s.data_dir
    if os.path.ismount(data_dir):
        raise MigrateError(
            f"{data_dir} is a mount point: a logical copy builds the new data directory beside it and renames it",
            hint="make data_dir a directory inside the mount (NixOS: services.mysql.dataDir)",
        )
    clear_leftovers(data_dir)
    staging = service.private_dir(staging_dir(data_dir))
    root_runner = CommandRunner(Identity.lookup(None))  # clients log in as admin_user through the socket
    user = service.run.identity.name
    with service.progress.task(f"fresh data directory of {versions.label(to_version)}"):
        initialize(service, to_version, staging)
    rows = service.private_dir(rows_dir(data_dir))
    with (
        running(service, from_version, data_dir, name="source", files=rows) as source,
        running(service, to_version, staging, name="target", slow_shutdown=True, bulk_load=True, files=rows) as target,
    ):
        dump = installation.tool(source.root, "dump")
        refused = unsupported(source, to_version, dump) + missing_collations(source, target)
        if refused:
            raise MigrateError(_refusal(to_version, refused), hint=HINT)
        databases = content.user_databases(source)
        grants = accounts(source, user)
        client = installation.tool(target.root, "client")
        options = ["--dump-history"] if carries_history(dump, to_version) else []
        if options and versions.key(source.version) < (11, 5) <= versions.key(target.version):
            options.append("--update-history")  # 11.5 moved the end of time from 2038 to 2106
        crosses_end_of_time = bool(options) and versions.key(target.version) < (11, 5) <= versions.key(source.version)
        with (
            source.client_options() as source_options,
            target.client_options() as target_options,
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader,
        ):
            read = reader.submit(_read_source, source.twin(), user, s.jobs, sample)

            def load(args: list[str], what: str, database: str | None = None) -> None:
                with service.progress.task(what):
                    root_runner.pipeline(
                        [
                            [dump, f"--defaults-extra-file={source_options}", "--single-transaction", "--hex-blob",
                             "--quick", "--default-character-set=utf8mb4", "--skip-dump-date",
                             "--max-allowed-packet=1G", *args],
                            dump_filter(crosses_end_of_time),
                            [client, f"--defaults-extra-file={target_options}", "--default-character-set=utf8mb4",
                             "--max-allowed-packet=1G", "--binary-mode", *([database] if database else [])],
                        ]
                    )  # fmt: skip

            files = rowfiles.tables(source, databases) if rowfiles.applies(from_version, to_version) else []
            if files:  # their definitions first (views may name them), their triggers after their rows
                rowfiles.create_databases(source, target, databases)
                for database, names in rowfiles.by_database(files):
                    load(["--no-data", "--skip-triggers", database, *names], f"definitions of {database}", database)
            if databases:
                skipped = [f"--ignore-table={t.schema}.{t.name}" for t in files]
                load(["--databases", *databases, "--routines", "--events", "--triggers", *skipped, *options],
                     f"dump of {len(databases)} databases into {versions.label(to_version)}")  # fmt: skip
            for table in files:
                with service.progress.task(f"rows of {table.label} as a file"):
                    rowfiles.move(source, target, table, rows)
            for database, names in rowfiles.by_database(files):
                load(["--no-data", "--no-create-info", "--triggers", database, *names], f"triggers of {database}",
                     database)  # fmt: skip
            source_rows, source_depth = read.result()
        for statement in grants:
            target.query(statement)
        target.query("FLUSH PRIVILEGES")
    shutil.rmtree(rows, ignore_errors=True)
    backed = content.compare(expected, source_depth)
    if not backed.ok:
        raise MigrateError(
            f"the data of {versions.label(from_version)} is not what the backup's fingerprint holds: {backed.detail}",
            hint="nothing changed; run the step again (it takes a new backup)",
        )
    # the copy is checked as the service will find it: by a server started again on the files the
    # loading one left at its shutdown (which also sizes each table anew: MariaDB's bulk insert into
    # an empty table leaves the statistics of an empty one, and CHECK TABLE of a table filled in
    # the same run is several times slower)
    with (
        running(service, to_version, staging, name="target", slow_shutdown=True) as target,
        service.progress.task("checks of the copy, compared with the fingerprint"),
    ):
        checks = content.after_step(target, source_rows, user, s.jobs)
    problems = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    if problems:
        raise MigrateError(f"the copy on {versions.label(to_version)}: " + "; ".join(problems))
    if files:
        moved = ", ".join(t.label for t in files)
        checks.append(Check("rows moved as files", True, f"{moved} (INTO OUTFILE / LOAD DATA); the rest dumped"))
    _carry_files(data_dir, staging)
    _swap(data_dir, staging)
    record.keep(service, data_dir, to_version, checks)


def _read_source(source: Server, user: str, jobs: int, sample: bool) -> tuple[dict[str, str], dict[str, str]]:
    """The source's fingerprint in full, and at the depth of the backup's (the same when that is
    full), through `source`'s connection (a twin), closed after."""
    try:
        full = content.fingerprint(source, user, jobs)
        return full, content.fingerprint(source, user, jobs, sample=True) if sample else full
    except Exception as exc:  # the server's own error, named as the copy's failure
        raise MigrateError(f"{versions.label(source.version)}: the source could not be read: {exc}") from exc
    finally:
        source.close()


def _carry_files(data_dir: Path, staging: Path) -> None:
    """Files of the data directory a fresh one lacks and the server needs: TLS keys and
    certificates the server generated or the operator put there."""
    for path in data_dir.glob("*.pem"):
        if not (staging / path.name).exists():
            shutil.copy2(path, staging / path.name)
            with contextlib.suppress(OSError):
                st = path.stat()
                os.chown(staging / path.name, st.st_uid, st.st_gid)


def _swap(data_dir: Path, staging: Path) -> None:
    """Put `staging` in the place of `data_dir` (owner and mode of the old one)."""
    st = data_dir.stat()
    os.chmod(staging, st.st_mode & 0o7777)
    with contextlib.suppress(PermissionError):
        os.chown(staging, st.st_uid, st.st_gid)
    _fsync_tree(staging)
    replaced = replaced_dir(data_dir)
    data_dir.rename(replaced)
    staging.rename(data_dir)
    _fsync_dir(data_dir.parent)
    shutil.rmtree(replaced, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """The server synced its own files at shutdown; the directories that name them too."""
    for dirpath, _dirs, _files in os.walk(root):
        _fsync_dir(Path(dirpath))
