# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""A stand-in `grafana` for the grafana plugin's tests: no Grafana server exists on these machines
(not in Debian, not on PyPI; SERVERS.md). It does what the plugin depends on, as Grafana does:

- `grafana --version` says `grafana version X.Y.Z`; `grafana server` takes `--homepath` (which
  must hold `conf/defaults.ini`, as Grafana refuses to start without it), `--config`, `--pidfile`
  and `cfg:[default.]section.key=value` overrides, read in Grafana's order (defaults.ini, the
  config file, the overrides) with `$__file{path}` expanded;
- the database is `[database] path` (relative to `[paths] data`) of `type = sqlite3`;
- its migrator creates `migration_log`, reads the ids logged with success, and runs every
  registered migration not among them in registration order, each in its own transaction that
  also inserts its log row (id, sql, success, error, timestamp); a migration that fails rolls back,
  is reported as `migration failed (id = …)`, and Grafana exits 1 with the earlier ones kept;
- ids in the log that it does not register are ignored, as Grafana ignores them (an older release
  starts on a newer database: what the plugin exists to prevent);
- once migrated it writes as Grafana does on start (the main org and the admin user when there
  are no users) and serves `/api/health` (`{"database": "ok", "version": …}`) on
  `[server] http_addr:http_port`; SIGTERM stops it cleanly.

The releases and their migrations are in grafana_migrations.py. It lives in tests only.
"""

from __future__ import annotations

import configparser
import json
import re
import signal
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from grafana_migrations import MIGRATIONS

RELEASES = {"9.5": "9.5.21", "10.4": "10.4.19", "11.6": "11.6.6"}
ORDER = list(RELEASES)


def registered(series: str) -> list[tuple[str, list[str]]]:
    """The migrations release `series` registers, in its order."""
    upto = ORDER.index(series)
    return [(mid, sql) for introduced, mid, sql in MIGRATIONS if ORDER.index(introduced) <= upto]


def prefix_script(python: str, paths: list[str], release: str) -> str:
    return (
        f"#!{python}\nimport sys\nsys.path[:0] = {paths!r}\n"
        f"import grafana_standin\nsys.exit(grafana_standin.main({release!r}, sys.argv[1:]))\n"
    )


DEFAULTS_INI = """\
app_mode = production
[paths]
data = data
logs = data/log
plugins = data/plugins
provisioning = conf/provisioning
[server]
protocol = http
http_addr =
http_port = 3000
[database]
type = sqlite3
path = grafana.db
[security]
admin_user = admin
admin_password = admin
secret_key = SW2YcwTIb9zpOOhoPsMm
"""


def log(level: str, msg: str, **fields: object) -> None:
    extra = " ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in fields.items())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"logger=migrator t={stamp} level={level} msg={msg!r} {extra}".rstrip(), flush=True)


def _expand(value: str) -> str:
    match = re.fullmatch(r"\$__file\{(.*)\}", value.strip())
    return Path(match.group(1)).read_text().strip() if match else value


def configuration(argv: list[str]) -> tuple[dict[str, dict[str, str]], Path]:
    homepath = config = None
    overrides: list[tuple[str, str, str]] = []
    args = iter(argv)
    for arg in args:
        name, eq, inline = arg.partition("=")
        if name in {"--homepath", "--config", "--pidfile", "--packaging"}:
            value = inline if eq else next(args)
            if name == "--homepath":
                homepath = Path(value)
            elif name == "--config":
                config = Path(value)
        elif arg.startswith("cfg:"):
            key, _, value = arg[4:].partition("=")
            parts = key.removeprefix("default.").split(".")
            section, option = (".".join(parts[:-1]) or "DEFAULT"), parts[-1]
            overrides.append((section, option, value))
        else:
            raise SystemExit(f"Incorrect Usage: flag provided but not defined: {arg}")
    home = homepath or Path.cwd()
    defaults = home / "conf" / "defaults.ini"
    if not defaults.is_file():
        raise SystemExit(
            "Grafana-server Init Failed: Could not find config defaults, make sure homepath command line "
            "parameter is set or working directory is homepath"
        )
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string("[DEFAULT]\n" + defaults.read_text())
    if config is not None:
        if not config.is_file():
            raise SystemExit(f"failed to load configuration: open {config}: no such file or directory")
        parser.read_string("[DEFAULT]\n" + config.read_text())
    for section, option, value in overrides:
        if section != "DEFAULT" and not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, option, value)
    found = {s: {k: _expand(v) for k, v in parser.items(s)} for s in parser.sections()}
    return found, home


def migrate(db: sqlite3.Connection, series: str) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS `migration_log` (`id` INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, "
        "`migration_id` TEXT NULL, `sql` TEXT NULL, `success` INTEGER NULL, `error` TEXT NULL, "
        "`timestamp` DATETIME NULL)"
    )
    done = {r[0] for r in db.execute("SELECT migration_id FROM migration_log WHERE success = 1")}
    if "create migration_log table" not in done:
        db.execute(
            "INSERT INTO migration_log (migration_id, sql, success, error, timestamp) VALUES "
            "('create migration_log table', 'CREATE TABLE migration_log', 1, '', datetime('now'))"
        )
        db.commit()
    todo = [(mid, sql) for mid, sql in registered(series) if mid not in done]
    log("info", "Starting DB migrations")
    started = time.monotonic()
    for mid, statements in todo:
        log("info", "Executing migration", id=mid)
        try:
            db.execute("BEGIN")
            for statement in statements:
                db.execute(statement)
            db.execute(
                "INSERT INTO migration_log (migration_id, sql, success, error, timestamp) "
                "VALUES (?, ?, 1, '', datetime('now'))",
                (mid, ";\n".join(statements)),
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            log("error", "Executing migration failed", id=mid, error=str(exc))
            raise SystemExit(f"Error: ✗ migration failed (id = {mid}): {exc}") from None
    log("info", "migrations completed", performed=len(todo), skipped=len(done), duration=time.monotonic() - started)


def first_start(db: sqlite3.Connection, security: dict[str, str]) -> None:
    """What Grafana writes on start: the main org and the admin user of a database without users."""
    if db.execute("SELECT count(*) FROM `user`").fetchone()[0]:
        return
    with db:
        db.execute(
            "INSERT INTO org (version, name, created, updated) "
            "VALUES (0, 'Main Org.', datetime('now'), datetime('now'))"
        )
        db.execute(
            "INSERT INTO `user` (version, login, email, name, org_id, is_admin, created, updated) "
            "VALUES (0, ?, 'admin@localhost', '', 1, 1, datetime('now'), datetime('now'))",
            (security.get("admin_user", "admin"),),
        )


def main(release: str, argv: list[str]) -> int:
    if argv and argv[0] in {"--version", "-v"}:
        print(f"grafana version {release}")
        return 0
    if not argv or argv[0] != "server":
        print("usage: grafana [server|cli] ...", file=sys.stderr)
        return 2
    series = ".".join(release.split(".")[:2])
    cfg, home = configuration(argv[1:])
    paths, database = cfg.get("paths", {}), cfg.get("database", {})
    data = Path(paths.get("data", "data"))
    data = data if data.is_absolute() else home / data
    if database.get("type", "sqlite3") != "sqlite3":
        raise SystemExit(f"the stand-in serves sqlite3 only, not {database.get('type')}")
    path = Path(database.get("path", "grafana.db"))
    path = path if path.is_absolute() else data / path
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    migrate(db, series)
    first_start(db, cfg.get("security", {}))
    server_cfg = cfg.get("server", {})

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/api/health":
                self.send_error(404)
                return
            try:
                db.execute("SELECT 1").fetchone()
                state = "ok"
            except sqlite3.Error:
                state = "failing"
            body = json.dumps({"commit": "standin", "database": state, "version": release}).encode()
            self.send_response(200 if state == "ok" else 503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    address = server_cfg.get("http_addr") or "0.0.0.0"
    http = ThreadingHTTPServer((address, int(server_cfg.get("http_port", 3000))), Health)

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=http.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f'logger=http.server msg="HTTP Server Listen" address={http.server_address}', flush=True)
    http.serve_forever()
    db.close()
    return 0
