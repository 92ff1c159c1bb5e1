"""The backup before a hop and its restore: GitLab's own archive (`gitlab-backup create`: the
database, repositories, uploads... less what settings.backup_skip leaves out) with the files it
leaves out and a restore needs (the secrets that decrypt the database's encrypted columns, the
configuration, the VERSION file), every one checksummed in one manifest.

A restore checks every checksum before it changes anything, and runs the restore of the
version that made the archive: GitLab refuses an archive of another version."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.fingerprint import file_digest
from nixos_migrate.model import BackupInfo, BackupRecord, Step
from nixos_migrate_gitlab import database, tools
from nixos_migrate_gitlab.settings import GitlabSettings

MANIFEST = "gitlab-backup.json"
VERSION_FILE = "VERSION"
KIND = "gitlab-backup"


def _archive_name(dest: Path) -> str:
    return f"nixos-migrate-{dest.name}"


def _archive_file(s: GitlabSettings, name: str) -> Path:
    return s.archive_dir / f"{name}_gitlab_backup.tar"


def _env(s: GitlabSettings, name: str) -> dict[str, str]:
    env = {"BACKUP": name}
    if s.backup_skip:
        env["SKIP"] = ",".join(s.backup_skip)
    return env


def take(service: Service, step: Step, dest: Path) -> BackupInfo:
    s = database.settings_of(service)
    version = step.from_version or ""
    root = tools.prefix(s, version)
    name = _archive_name(dest)
    archive = _archive_file(s, name)
    service.private_dir(s.archive_dir)
    with service.progress.task(f"gitlab-backup create ({version})"):
        service.run.run(tools.backup_command(root, "create"), env={**tools.BASE_ENV, **_env(s, name)})
    if not archive.is_file():
        raise MigrateError(
            f"gitlab-backup create left no {archive}", hint="settings.backup_path must be GitLab's backup.path"
        )
    kept = dest / archive.name
    shutil.move(archive, kept)
    secrets: list[dict[str, Any]] = []
    missing: list[str] = []
    stored = dest / "secrets"
    stored.mkdir(mode=0o700)
    for index, path in enumerate([*s.secrets, s.state_dir / VERSION_FILE]):
        if not path.is_file():
            missing.append(str(path))
            continue
        copy = stored / f"{index}-{path.name}"
        shutil.copy2(path, copy)
        st = path.stat()
        secrets.append(
            {"path": str(path), "copy": copy.name, "sha256": file_digest(copy), "uid": st.st_uid, "gid": st.st_gid}
        )
    manifest = {
        "version": version,
        "release": (s.state_dir / VERSION_FILE).read_text().strip() if (s.state_dir / VERSION_FILE).is_file() else None,
        "archive": kept.name,
        "name": name,
        "sha256": file_digest(kept),
        "skip": list(s.backup_skip),
        "files": secrets,
        "missing": missing,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True)
    (dest / MANIFEST).write_text(text)
    size = kept.stat().st_size + sum((stored / f["copy"]).stat().st_size for f in secrets)
    detail = {"version": version, "archive": kept.name, "skipped": list(s.backup_skip), "files": len(secrets)}
    if missing:
        detail["missing"] = missing
    return BackupInfo(KIND, dest, size, hashlib.sha256(text.encode()).hexdigest(), detail)


def _manifest(backup: BackupRecord) -> dict[str, Any]:
    path = Path(backup.path) / MANIFEST
    if not path.is_file():
        raise MigrateError(f"backup {backup.id} has no {MANIFEST} in {backup.path}")
    text = path.read_text()
    if backup.checksum and hashlib.sha256(text.encode()).hexdigest() != backup.checksum:
        raise MigrateError(f"backup {backup.id}: {path} does not match the checksum the journal recorded")
    return dict(json.loads(text))


def verified(backup: BackupRecord) -> dict[str, Any]:
    """The backup's manifest, every file of it checked against its checksum first."""
    manifest = _manifest(backup)
    base = Path(backup.path)
    bad = [manifest["archive"]] if file_digest(base / manifest["archive"]) != manifest["sha256"] else []
    bad += [f["copy"] for f in manifest["files"] if file_digest(base / "secrets" / f["copy"]) != f["sha256"]]
    if bad:
        raise MigrateError(
            f"backup {backup.id} is damaged: {', '.join(bad)} differ from their checksums (nothing restored)"
        )
    return manifest


def restore(service: Service, backup: BackupRecord) -> None:
    s = database.settings_of(service)
    manifest = verified(backup)
    root = tools.prefix(s, manifest["version"])
    base = Path(backup.path)
    archive = _archive_file(s, manifest["name"])
    service.private_dir(s.archive_dir)
    # a copy: the backup stays whole for a later restore
    shutil.copyfile(base / manifest["archive"], archive)
    os.chown(archive, service.run.identity.uid, service.run.identity.gid)
    try:
        with service.progress.task(f"gitlab-backup restore ({manifest['version']})"):
            service.run.run(
                tools.backup_command(root, "restore"),
                env={**tools.BASE_ENV, **_env(s, manifest["name"]), "force": "yes"},
            )
    finally:
        archive.unlink(missing_ok=True)
    for entry in manifest["files"]:
        path = Path(entry["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(base / "secrets" / entry["copy"], path)
        os.chown(path, entry["uid"], entry["gid"])
    version_file = s.state_dir / VERSION_FILE
    if str(version_file) in manifest["missing"]:
        version_file.unlink(missing_ok=True)
