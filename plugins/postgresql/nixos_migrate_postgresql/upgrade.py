"""pg_upgrade: the method, its command line, its dry run (`--check`) and the upgrade into a staging cluster."""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.model import Check, Step
from nixos_migrate_postgresql import commit, layout, origin, stage, state, verification
from nixos_migrate_postgresql.cluster import (
    binary,
    prefix_of,
)
from nixos_migrate_postgresql.inspect import Inspection, initdb_argv


def method_flags(method: str, new_major: int) -> list[str]:
    if method == "copy":
        return ["--copy"] if new_major >= 16 else []
    return [f"--{method}"]


def check_run(service: Service, step: Step, src: Path, dst: Path, found: Inspection, method: str) -> Check:
    """`pg_upgrade --check` against a throwaway new cluster beside the target; changes no data."""
    s = state.settings_of(service)
    scratch = layout.check_dir(dst, src)
    shutil.rmtree(scratch, ignore_errors=True)
    service.private_dir(scratch)  # initdb fills an empty directory the service user owns
    try:
        service.run.run(initdb_argv(binary(s, step.to_version, "initdb"), scratch, int(step.to_version), found))
        result = service.run.run(
            [*argv(service, step, src, scratch, found, method), "--check"],
            cwd=service.private_dir(service.state_dir / "pg_upgrade"),
            env=pg_env(service),
            check=False,
        )
        detail = (
            "\n".join(
                line
                for line in result.output.splitlines()
                if "fatal" in line.lower() or "*failure*" in line.lower() or "could not" in line.lower()
            )
            or result.output.strip()[-800:]
        )
        return Check("pg_upgrade --check", result.returncode == 0, "" if result.returncode == 0 else detail)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def pg_env(service: Service) -> dict[str, str]:
    s = state.settings_of(service)
    env: dict[str, str] = {}
    if s.password_file is not None:
        passfile = service.private_dir(service.state_dir / "secrets") / "pgpass"
        password = s.password_file.read_text().strip().replace("\\", "\\\\").replace(":", "\\:")
        passfile.write_text(f"*:*:*:*:{password}\n")
        passfile.chmod(0o600)
        if os.geteuid() == 0:
            os.chown(passfile, service.run.identity.uid, service.run.identity.gid)
        env["PGPASSFILE"] = str(passfile)
    return env


def argv(service: Service, step: Step, src: Path, new: Path, found: Inspection, method: str) -> list[str]:
    s = state.settings_of(service)
    old_bin = prefix_of(s, step.from_version or "") / "bin"
    new_bin = prefix_of(s, step.to_version) / "bin"
    return [
        str(new_bin / "pg_upgrade"),
        "-b",
        str(old_bin),
        "-B",
        str(new_bin),
        "-d",
        str(src),
        "-D",
        str(new),
        "-U",
        found.superuser,
        "-j",
        str(s.jobs),
        "-s",
        str(state.socket(service)),
        "-p",
        str(s.port),
        "-P",
        str(s.port + 1),
        *method_flags(method, int(step.to_version)),
        *(["--no-sync"] if no_sync(step, method) else []),
    ]


def with_logs(service: Service, staging: Path, exc: MigrateError) -> MigrateError:
    """pg_upgrade writes its logs into the new cluster, which the restore removes: keep them in
    the service's log directory, and quote the end of the log that names the cause."""
    logs = staging / "pg_upgrade_output.d"
    if not logs.is_dir():
        return exc
    kept = service.state_dir / "logs" / f"pg_upgrade-{time.strftime('%Y%m%dT%H%M%S')}"
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(logs, kept)
    tail = ""
    for log in sorted(kept.rglob("*.log"), key=lambda f: f.stat().st_mtime, reverse=True):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if any("error" in line.lower() for line in lines[-10:]):
            tail = f"\nthe end of {log.name}:\n" + "\n".join(lines[-6:])
            break
    return MigrateError(f"{exc.message}{tail}", hint=f"pg_upgrade's logs are kept in {kept}")


def no_sync(step: Step, method: str) -> bool:
    """Whether pg_upgrade leaves syncing the new cluster to us (it has --no-sync from 15)."""
    return method != "dump" and int(step.to_version) >= 15


def into_staging(service: Service, step: Step, src: Path, method: str) -> Path:
    """initdb a staging cluster with the old cluster's settings, pg_upgrade into it, carry the
    config, and check it as verify would while its writes reach the disk: the staging directory,
    flushed and ready for the commit. A failure leaves the data path as it was."""
    saved = Inspection.load(state.inspection_file(service))
    # `backup` saves it; without one (a step run on its own), ask the source
    found = saved or origin.inspect_source(service, step, src, fingerprint_too=False)[0]
    staging = stage.initdb_staging(service, step, found)
    with service.progress.task(f"pg_upgrade --{method} {step.from_version} -> {step.to_version}"):
        try:
            service.run.run(
                argv(service, step, src, staging, found, method),
                cwd=service.private_dir(service.state_dir / "pg_upgrade"),
                env=pg_env(service),
            )
        except MigrateError as exc:
            raise with_logs(service, staging, exc) from exc
    commit.carry_config(src, staging)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # pg_upgrade ran with --no-sync where it has it: its writes reach the disk while the new
        # cluster is checked
        synced = pool.submit(commit.sync, service, staging) if no_sync(step, method) else None
        verification.before_commit(service, step, staging, found.superuser)
        if synced is not None:
            synced.result()
    commit.sync(service, staging)  # what the checking server wrote (it does not fsync)
    return staging
