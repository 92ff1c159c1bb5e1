"""The programs of one JupyterHub release: `jupyterhub upgrade-db`, an alembic downgrade with its
scripts, and a private hub started on a copy of the database to ask it `/hub/api`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate.runner import stop_process, wait_ready
from nixos_migrate_jupyterhub import versions
from nixos_migrate_jupyterhub.settings import JupyterhubSettings
from nixos_migrate_jupyterhub.store import Store

START_TIMEOUT = 300.0

#: run by the newer release's Python: its own alembic scripts, downgraded to a revision
DOWNGRADE = """\
import os, sys
import alembic.command, alembic.config
from jupyterhub.dbutil import _temp_alembic_ini
with _temp_alembic_ini(os.environ["NIXOS_MIGRATE_DB_URL"]) as ini:
    alembic.command.downgrade(alembic.config.Config(ini), sys.argv[1])
"""

#: the private hub of verify: the hub alone (no proxy process), on loopback, nobody's logins
CONFIG = """\
from jupyterhub.proxy import Proxy


class NoProxy(Proxy):
    should_start = False

    async def start(self):
        pass

    async def stop(self):
        pass

    async def add_route(self, routespec, target, data):
        pass

    async def delete_route(self, routespec):
        pass

    async def get_all_routes(self):
        return {{}}


c.JupyterHub.proxy_class = NoProxy
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {port}
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.cookie_secret_file = {secret!r}
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.cleanup_servers = False
c.JupyterHub.cleanup_proxy = False
"""


def settings_of(service: Service) -> JupyterhubSettings:
    settings = service.settings
    if not isinstance(settings, JupyterhubSettings):
        raise MigrateError("the jupyterhub plugin got settings it did not validate")
    return settings


def prefix(s: JupyterhubSettings, version: str) -> Path:
    if version not in s.packages:
        have = ", ".join(sorted(s.packages, key=versions.RELEASES.key)) or "none"
        raise UsageError(
            f"no package for JupyterHub {version} in settings.packages (have {have})",
            hint="add it to settings.packages (NixOS: services.nixos-migrate.jupyterhub.previousPackages)",
        )
    return s.packages[version]


def program(s: JupyterhubSettings, version: str, name: str = "jupyterhub") -> Path:
    found = prefix(s, version) / "bin" / name
    if not found.is_file():
        raise UsageError(
            f"JupyterHub {version}: no bin/{name} in {found.parent.parent}",
            hint=f"settings.packages.{version!r} must be a prefix or venv with JupyterHub installed",
        )
    return found


def _installed(root: Path) -> str | None:
    """The jupyterhub release installed in the environment `root`, from its distribution's
    metadata (a venv and a nixpkgs python3.withPackages environment both have it): reading it
    costs nothing, asking `jupyterhub --version` imports the whole hub."""
    found = sorted(root.glob("lib/python3*/site-packages/jupyterhub-*.dist-info"))
    if len(found) != 1:
        return None
    return found[0].name.removeprefix("jupyterhub-").removesuffix(".dist-info")


def release(s: JupyterhubSettings, version: str) -> str:
    """What the package's jupyterhub is, checked against the series it is given for."""
    hub = program(s, version)
    found = _installed(prefix(s, version))
    if found is not None:
        return _filed(version, found)
    try:
        out = subprocess.run([str(hub), "--version"], capture_output=True, text=True, timeout=120, check=False)
    except OSError as exc:
        raise MigrateError(f"{hub} does not run: {exc}") from None
    found = out.stdout.strip().split()[-1] if out.stdout.strip() else ""
    if out.returncode != 0 or not found[:1].isdigit():
        raise MigrateError(f"{hub} --version did not say a version: {(out.stdout + out.stderr).strip()[-300:]}")
    return _filed(version, found)


def _filed(version: str, found: str) -> str:
    if versions.series(found) != version:
        raise UsageError(
            f"settings.packages.{version!r} holds JupyterHub {found}", hint=f"put it under {versions.series(found)!r}"
        )
    return found


def environment(s: JupyterhubSettings, version: str) -> dict[str, str]:
    """The venv's bin first on PATH: upgrade-db calls `alembic` by name."""
    return {"PATH": f"{prefix(s, version) / 'bin'}:/run/current-system/sw/bin:/usr/bin:/bin"}


def upgrade_db(service: Service, version: str, db: Store) -> None:
    s = settings_of(service)
    argv = [str(program(s, version)), "upgrade-db", f"--db={db.url()}"]
    service.run.run(argv, env=environment(s, version) | db.env(), cwd=s.data_dir)


def downgrade(service: Service, newer: str, revision: str, db: Store) -> None:
    """alembic's downgrade of `db` (the database or a copy) to `revision`, with the scripts of
    release `newer`."""
    s = settings_of(service)
    python = program(s, newer, "python")
    env = environment(s, newer) | db.env() | {"NIXOS_MIGRATE_DB_URL": db.url()}
    service.run.run([str(python), "-c", DOWNGRADE, revision], env=env, cwd=s.data_dir)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _api(port: int) -> dict[str, object] | None:
    import urllib.request  # when a server is asked, not whenever the plugin loads (status)

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hub/api", timeout=5) as reply:
            return dict(json.loads(reply.read()))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def private_hub(service: Service, version: str, db: Store) -> Iterator[dict[str, object]]:
    """The hub of `version` started on a copy of `db` (a hub writes to its database when it
    starts: roles, users of its configuration, spawners it polls), answering `/hub/api`; the body
    gets that answer. Stopped by pid, the copy removed."""
    s = settings_of(service)
    work = service.state_dir / "hub"
    shutil.rmtree(work, ignore_errors=True)
    service.private_dir(work)
    copy = db.copy(service, "hub")
    try:
        secret = work / "cookie_secret"
        secret.write_bytes(s.secret.read_bytes() if s.secret.is_file() else b"00" * 32)
        secret.chmod(0o600)
        port = s.port or _free_port()
        config = work / "jupyterhub_config.py"
        config.write_text(CONFIG.format(port=port, proxy_port=_free_port(), db_url=copy.url(),
                                        secret=str(secret)))  # fmt: skip
        log = work / "hub.log"
        log.touch()
        if os.geteuid() == 0:  # the hub runs as the service's user and writes the copy and its log
            for path in (secret, config, log):
                os.chown(path, service.run.identity.uid, service.run.identity.gid)
        argv = [str(program(s, version)), "-f", str(config)]
        process = service.run.spawn(argv, env=environment(s, version) | copy.env(), log=log)
        answer: dict[str, object] = {}

        def answers() -> bool:
            answer.update(_api(port) or {})
            return bool(answer)

        try:
            problem = wait_ready(process, answers, START_TIMEOUT)
            if problem is not None:
                tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
                raise MigrateError(f"JupyterHub {version} did not start on the database ({problem}):\n{tail}")
            yield answer
        finally:
            stop_process(process, [(signal.SIGTERM, 60)])
    finally:
        copy.drop()
        shutil.rmtree(work, ignore_errors=True)
