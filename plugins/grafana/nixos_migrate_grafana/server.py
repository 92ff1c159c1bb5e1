"""The programs of one Grafana release: `grafana --version`, and a private `grafana server` on a
database (the service's, a copy of it, or an empty one), on loopback, until `/api/health`
answers.

Grafana migrates its database when its server starts and has no other command for it, so a
private server is how an up step runs the migrations and how a release's list of migrations is
read (it migrates an empty database; the log is the list). Its address, database, paths and
provisioning are overridden on the command line (`cfg:section.key=value`, applied after every
config file): nothing of the service's provisioning is applied, no plugin is installed (11.x
preinstalls plugins from the network on start) and nothing is served outside loopback. The
service's grafana.ini, when given, is read, so its secret_key and feature toggles are the ones
the migrations see.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate.runner import stop_process, wait_ready
from nixos_migrate_grafana import versions
from nixos_migrate_grafana.settings import GrafanaSettings

#: a first start migrates some 700 ids on a real release: minutes on a slow disk
START_TIMEOUT = 900.0


def settings_of(service: Service) -> GrafanaSettings:
    settings = service.settings
    if not isinstance(settings, GrafanaSettings):
        raise MigrateError("the grafana plugin got settings it did not validate")
    return settings


def database(s: GrafanaSettings) -> Path:
    if s.database_type != "sqlite3":
        raise UsageError(
            f"settings.database_type is {s.database_type}: this plugin moves Grafana's SQLite database",
            hint=f"migrate the {s.database_type} database with its own plugin (postgresql, mysql)",
        )
    return s.database


def prefix(s: GrafanaSettings, version: str) -> Path:
    if version not in s.packages:
        have = ", ".join(sorted(s.packages, key=versions.key)) or "none"
        raise UsageError(
            f"no package for Grafana {version} in settings.packages (have {have})",
            hint="add it to settings.packages (NixOS: services.nixos-migrate.grafana.previousPackages)",
        )
    return s.packages[version]


def program(s: GrafanaSettings, version: str) -> list[str]:
    """The server's argv start: `bin/grafana server`, or `bin/grafana-server` of releases before 9."""
    root = prefix(s, version)
    if (root / "bin" / "grafana").is_file():
        return [str(root / "bin" / "grafana"), "server"]
    if (root / "bin" / "grafana-server").is_file():
        return [str(root / "bin" / "grafana-server")]
    raise UsageError(
        f"Grafana {version}: no bin/grafana in {root}",
        hint=f"settings.packages.{version!r} must be a Grafana package (bin/grafana, share/grafana)",
    )


def homepath(s: GrafanaSettings, version: str) -> Path:
    home = prefix(s, version) / "share" / "grafana"
    if not (home / "conf" / "defaults.ini").is_file():
        raise UsageError(
            f"Grafana {version}: no share/grafana/conf/defaults.ini in {prefix(s, version)}",
            hint="Grafana does not start without its defaults; give the package's own prefix",
        )
    return home


def release(s: GrafanaSettings, version: str) -> str:
    """What the package's grafana is (`10.4.19`), checked against the series it is given for."""
    start = program(s, version)
    argv = [start[0], "--version"] if start[-1] == "server" else [*start, "-v"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except OSError as exc:
        raise MigrateError(f"{argv[0]} does not run: {exc}") from None
    found = re.search(r"\b(\d+\.\d+\.\d+\S*)", out.stdout)
    if out.returncode != 0 or found is None:
        raise MigrateError(f"{' '.join(argv)} did not say a version: {(out.stdout + out.stderr).strip()[-300:]}")
    if versions.series(found.group(1)) != version:
        raise UsageError(
            f"settings.packages.{version!r} holds Grafana {found.group(1)}",
            hint=f"put it under {versions.series(found.group(1))!r}",
        )
    return found.group(1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(port: int) -> dict[str, object] | None:
    import urllib.request  # when a server is asked, not whenever the plugin loads (status)

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as reply:
            answer = dict(json.loads(reply.read()))
    except (OSError, ValueError):
        return None
    return answer if answer.get("database") == "ok" else None


@contextlib.contextmanager
def running(service: Service, version: str, db: Path, what: str) -> Iterator[dict[str, object]]:
    """Grafana `version` serving the database `db` (migrated first, as every start does) on a
    loopback port; the body gets `/api/health`'s answer. Stopped by pid on the way out. `what`
    says what the start is for, in errors."""
    s = settings_of(service)
    work = service.state_dir / f"grafana-{version}"
    shutil.rmtree(work, ignore_errors=True)  # a killed run's leftovers
    service.private_dir(work)
    try:
        for sub in ("plugins", "provisioning", "logs"):
            service.private_dir(work / sub)
        port = s.port or _free_port()
        argv = [*program(s, version), "--homepath", str(homepath(s, version))]
        if s.config_file is not None:
            argv += ["--config", str(s.config_file)]
        elif s.secret_key_file is not None:
            argv.append(f"cfg:security.secret_key=$__file{{{s.secret_key_file}}}")
        argv += [
            "cfg:server.protocol=http", "cfg:server.http_addr=127.0.0.1", f"cfg:server.http_port={port}",
            "cfg:database.type=sqlite3", f"cfg:database.path={db}", f"cfg:paths.data={work}",
            f"cfg:paths.logs={work / 'logs'}", f"cfg:paths.plugins={work / 'plugins'}",
            f"cfg:paths.provisioning={work / 'provisioning'}", "cfg:log.mode=console",
            "cfg:analytics.reporting_enabled=false", "cfg:analytics.check_for_updates=false",
            "cfg:analytics.check_for_plugin_updates=false", "cfg:plugins.preinstall_disabled=true",
        ]  # fmt: skip
        log = work / "grafana.log"
        log.touch()
        if os.geteuid() == 0:
            os.chown(log, service.run.identity.uid, service.run.identity.gid)
        process = service.run.spawn(argv, log=log)
        answer: dict[str, object] = {}

        def answers() -> bool:
            answer.update(_health(port) or {})
            return bool(answer)

        try:
            problem = wait_ready(process, answers, START_TIMEOUT)
            if problem is not None:
                raise MigrateError(f"Grafana {version} {what} failed ({problem}):\n{_tail(log)}")
            yield answer
        finally:
            stop_process(process, [(signal.SIGTERM, 60)])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tail(log: Path) -> str:
    """The log's last lines, the migrator's error first when there is one."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    failed = [line for line in text.splitlines() if "migration failed" in line]
    return "\n".join([*failed[-1:], text[-1500:]]) if failed else text[-1500:]
