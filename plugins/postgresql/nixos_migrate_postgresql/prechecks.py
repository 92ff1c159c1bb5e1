"""`check`: everything that can refuse a step before it changes anything."""

from __future__ import annotations

import shutil

from nixos_migrate import filebackup
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.fingerprint import tree_size
from nixos_migrate.model import Check, Step
from nixos_migrate_postgresql import layout, origin, state, tablespaces, upgrade
from nixos_migrate_postgresql.cluster import (
    binary,
    control_data,
    major_of,
    prefix_of,
    running_pid,
    same_filesystem,
)
from nixos_migrate_postgresql.inspect import Inspection

UP_TOOLS = {
    "old": ("postgres", "pg_controldata", "psql"),
    "new": ("initdb", "pg_upgrade", "postgres", "vacuumdb", "psql", "pg_dumpall", "pg_dump"),
}


DOWN_TOOLS = {
    "old": ("postgres", "pg_controldata", "pg_dump", "pg_dumpall", "psql"),
    "new": ("initdb", "postgres", "psql"),
}


def check(service: Service, step: Step) -> list[Check]:
    s = state.settings_of(service)
    checks: list[Check] = []
    tools = UP_TOOLS if step.direction == "up" else DOWN_TOOLS
    missing = []
    for side, major in (("old", step.from_version or ""), ("new", step.to_version)):
        for tool in tools[side]:
            try:
                binary(s, major, tool)
            except MigrateError as exc:
                missing.append(exc.message)
    checks.append(Check("binaries of both majors", not missing, "; ".join(missing)))
    if missing:
        return checks
    try:
        src = state.source_dir(service, step)
    except MigrateError as exc:
        return [*checks, Check("source cluster", False, exc.message)]
    dst = state.target_dir(service, step)
    pid = running_pid(src)
    unit = service.control.unit
    if pid is not None and unit and service.control.is_active():
        # the pre-switch check runs while the old generation's server still serves; `up` stops it first
        detail = f"runs now as {unit} (pid {pid}); `up` stops {unit} and checks the cluster again"
        return [*checks, Check("source cluster stopped before the step", True, detail)]
    checks.append(Check("source cluster not running", pid is None, f"postmaster pid {pid} on {src}" if pid else ""))
    if pid is not None:
        return checks
    control = control_data(service.run, prefix_of(s, step.from_version or ""), src)
    checks.append(Check("source cluster shut down cleanly", control.shut_down, f"state: {control.state}"))
    built_in = layout.staging_dir(dst, src).parent
    pinned = [f"{path} is {layout.describe(path)}" for path in sorted({src, dst}) if layout.pinned(path)]
    if pinned:
        how = f"its contents move, the directory stays; the new cluster is built in {built_in}"
        checks.append(Check("layout", True, "; ".join(pinned) + f": {how}"))
    for taken in tablespaces.occupied(tablespaces.locations(src), step.to_version):
        checks.append(
            Check(
                f"tablespace directory {taken} is free",
                False,
                f"another PostgreSQL {step.to_version} cluster used this tablespace location, and the new "
                "cluster's files go there; move the directory away if no cluster needs it",
            )
        )
    if dst != src:
        other = major_of(dst)
        checks.append(Check(f"{dst} holds no cluster yet", other is None, f"it holds PostgreSQL {other}"))
        if dst.exists() and other is None and layout.cluster_entries(dst):
            checks.append(Check(f"{dst} is empty", False, "it holds files that are no cluster"))
    method = str(step.data.get("method", "copy"))
    if method in ("link", "swap"):
        choice = filebackup.choose(src)
        checks.append(
            Check("backup", True, f"{choice.kind}: {choice.why} (pg_upgrade --{method} changes the old cluster)")
        )
    else:
        checks.append(Check("backup", True, "the untouched old cluster is retained (renamed, O(1))"))
    new = int(step.to_version)
    if step.direction == "up":
        if method == "copy-file-range" and new < 17:
            checks.append(Check("method copy-file-range", False, "pg_upgrade has --copy-file-range from 17"))
        if method == "swap" and new < 18:
            checks.append(Check("method swap", False, "pg_upgrade has --swap from 18"))
        if method in ("link", "swap") and not same_filesystem(src, built_in):
            checks.append(
                Check(
                    f"method {method}",
                    False,
                    f"pg_upgrade --{method} hard-links or moves the old cluster's files into the new one, which "
                    f"cannot cross filesystems or btrfs subvolumes: the old cluster {src} is {layout.describe(src)} "
                    f'and the new one is built in {built_in}; set method = "clone" where reflinks work (btrfs '
                    'across subvolumes, XFS) or "auto"',
                )
            )
        if method == "clone" and not filebackup.reflinks_between(src / "PG_VERSION", built_in):
            checks.append(
                Check(
                    "method clone",
                    False,
                    f"files of {src} cannot be reflinked into {built_in} (another filesystem, or one without "
                    'reflinks); set method = "auto" or "copy"',
                )
            )
        if method == "copy-file-range" and not same_filesystem(src, built_in):
            checks.append(Check("method copy-file-range", False, f"{src} and {built_in} are on different filesystems"))
    if not all(c.ok for c in checks):
        return checks
    found: Inspection | None = None
    if not service.applying or s.expected_databases is not None or step.direction == "down":
        # a private server on the old cluster; when applying an upgrade, the backup inspects it anyway
        blocked: list[str] = []
        found, _ = origin.inspect_source(service, step, src, fingerprint_too=False, blockers=blocked)
        if step.direction == "down":
            checks.append(
                Check(
                    f"PostgreSQL {step.to_version} can hold every object",
                    not blocked,
                    (
                        "; ".join(blocked) + "; drop or change them on the newer major first,"
                        " or restore the backup taken before the upgrade"
                    )
                    if blocked
                    else "no object of a kind it lacks",
                )
            )
        checks.append(Check("data checksums carried", True, "on" if found.checksums else "off"))
        checks.append(
            Check(
                "encoding and locale carried",
                True,
                f"{found.encoding}, {found.collate}/{found.ctype}, provider {found.provider}",
            )
        )
    if found is not None and s.expected_databases is not None:
        extra = sorted(set(found.databases) - set(s.expected_databases) - {"template0", "template1", "postgres"})
        checks.append(Check("only the expected databases", not extra, f"unexpected: {', '.join(extra)}"))
    size = tree_size(src)
    # clone shares extents and link/swap share or move files: only copy, copy-file-range and dump write it all
    need = size + size // 10 if method in ("copy", "copy-file-range", "dump") else (64 << 20)
    free = shutil.disk_usage(dst.parent if dst.parent.exists() else src.parent).free
    checks.append(
        Check(f"room for the new cluster ({method})", free >= need, f"{free >> 20} MiB free, {need >> 20} MiB needed")
    )
    if step.direction == "up" and method != "dump":
        if found is None or service.applying:
            # pg_upgrade runs the same consistency checks first, before it changes anything, and a
            # failure there is restored like any other; `plan` (the pre-switch check) runs them now
            checks.append(Check("pg_upgrade --check", True, "done by pg_upgrade itself before it changes anything"))
        else:
            checks.append(upgrade.check_run(service, step, src, dst, found, method))
    return checks
