"""The in-place upgrade: the newer server opens the data (which a slow shutdown of the older one
left purged and merged), and the upgrade tool converts the system tables and checks every table
for incompatibilities (`mariadb-upgrade`; `mysql_upgrade` before MySQL 8.0; MySQL 8.0+ does it
itself when it starts). Then the server starts again, as the tool asks, and what a skipped or
failed upgrade leaves is looked for explicitly: routines that cannot be loaded from `mysql.proc`,
an event scheduler the server disabled at start, an upgrade-info file that does not name the
new series; with it every table is checked and the content compared with the fingerprint taken
before the step (recorded for the verify that follows, record.py).
"""

from __future__ import annotations

import contextlib
import os

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.model import Step
from nixos_migrate.runner import CommandRunner, Identity
from nixos_migrate_mysql import content, installation, record, versions
from nixos_migrate_mysql.server import running


def in_place(service: Service, step: Step, expected: dict[str, str]) -> None:
    s = installation.settings_of(service)
    target = step.to_version
    # no grant tables while the tool runs: it cannot carry every password (see server.running),
    # and the private socket is the only way in
    with running(service, target, s.data_dir, skip_grants=True) as server:
        if not versions.self_upgrading(target):
            upgrade = installation.tool(server.root, "upgrade")
            with (
                server.client_options() as options,
                service.progress.task(f"{upgrade.name} of {versions.label(target)}"),
            ):
                # as nixos-migrate's own user: admin_user logs in through the socket (unix_socket)
                CommandRunner(Identity.lookup(None)).run([upgrade, f"--defaults-extra-file={options}", "--force"])
    identity = service.run.identity
    for name in installation.UPGRADE_INFO:  # written by the tool, which ran as root
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.chown(s.data_dir / name, identity.uid, identity.gid)
    with (
        running(service, target, s.data_dir, name="upgraded") as server,
        service.progress.task(f"checks of the data on {versions.label(target)}"),
    ):
        checks = content.after_step(server, expected, service.run.identity.name, s.jobs, installation.sampled(s, step))
    problems = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    release = installation.upgrade_info(s.data_dir)
    if versions.is_mariadb(target) and (release is None or versions.series_of(release) != target):
        problems.append(f"the upgrade-info file names {release or 'nothing'}, not {versions.label(target)}")
    if problems:
        raise MigrateError(f"{versions.label(target)} after the upgrade: " + "; ".join(problems))
    record.keep(service, s.data_dir, target, checks)
