"""The in-place upgrade: the newer server opens the data (which a slow shutdown of the older one
left purged and merged), and the upgrade tool converts the system tables and checks every table
for incompatibilities (`mariadb-upgrade`; `mysql_upgrade` before MySQL 8.0; MySQL 8.0+ does it
itself when it starts). Skipping the tool leaves the failures the verification looks for: the
event scheduler disabled and routines that cannot be loaded from `mysql.proc`.
"""

from __future__ import annotations

import contextlib
import os

from nixos_migrate.context import Service
from nixos_migrate.model import Step
from nixos_migrate.runner import CommandRunner, Identity
from nixos_migrate_mysql import installation, versions
from nixos_migrate_mysql.server import running


def in_place(service: Service, step: Step) -> None:
    s = installation.settings_of(service)
    target = step.to_version
    with running(service, target, s.data_dir) as server:
        if versions.self_upgrading(target):
            return  # the server upgraded its data dictionary and system tables as it started
        upgrade = installation.tool(server.root, "upgrade")
        with server.client_options() as options, service.progress.task(f"{upgrade.name} of {versions.label(target)}"):
            # as nixos-migrate's own user: admin_user logs in through the socket (unix_socket)
            CommandRunner(Identity.lookup(None)).run([upgrade, f"--defaults-extra-file={options}", "--force"])
    identity = service.run.identity
    for name in installation.UPGRADE_INFO:  # written by the tool, which ran as root
        with contextlib.suppress(FileNotFoundError, PermissionError):
            os.chown(s.data_dir / name, identity.uid, identity.gid)
