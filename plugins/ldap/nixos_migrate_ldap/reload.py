"""The data reloaded into the target's directories with its binaries, put in place last."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.model import Step
from nixos_migrate_ldap import cnconfig, installation, ldif, slapd


def reload(service: Service, step: Step, dumps: Path, config: list[ldif.Entry]) -> None:
    s = installation.settings_of(service)
    if s.config_dir is None:
        raise MigrateError("settings.config_dir is needed to write the new configuration")
    new = installation.prefix(s, step.to_version)
    suffixes: dict[str, dict[str, Any]] = json.loads((service.state_dir / "expected.json").read_text())
    stage_data = installation.staging_path(s.data_dir, "staging")
    stage_config = installation.staging_path(s.config_dir, "staging")
    load_config = service.state_dir / "load.d"
    for path in (stage_data, stage_config, load_config):
        shutil.rmtree(path, ignore_errors=True)
    service.private_dir(stage_data)
    data_root = s.data_dir.resolve()

    def staged(directory: str) -> str:
        return str(stage_data / Path(directory).resolve().relative_to(data_root))

    directories = {d.directory: staged(d.directory) for d in ldif.databases(config) if d.directory}
    how = cnconfig.rewrite_for(s, step, directories)
    loading = ldif.rewrite(config, how)
    for directory in directories.values():
        service.private_dir(Path(directory))  # slapadd -n 0 wants the database directories to exist
    with service.progress.task(f"slapadd with OpenLDAP {step.to_version}", total=len(suffixes) + 1) as task:
        cnconfig.build_config(service, new, loading, load_config, service.state_dir / "load-config.ldif")
        task.advance()
        for db in ldif.databases(loading):
            if db.suffix is None or db.directory is None:
                continue
            dump = suffixes.get(db.suffix)
            if dump is None:
                raise MigrateError(f"no dump of {db.suffix} in {dumps}: the configs before and after disagree")
            service.private_dir(Path(db.directory))
            service.run.run([slapd.tool(new, "slapadd"), "-q", "-F", load_config, "-b", db.suffix,
                             "-l", dumps / dump["file"]])  # fmt: skip
            task.advance()
    service.run.run([slapd.tool(new, "slaptest"), "-F", load_config])
    final = ldif.rewrite(config, cnconfig.rewrite_for(s, step, {}))
    cnconfig.build_config(service, new, final, stage_config, service.state_dir / "config.ldif")
    service.run.run([slapd.tool(new, "slaptest"), "-u", "-F", stage_config])
    (stage_data / installation.MARKER).write_text(step.to_version + "\n")
    commit(service, [(s.config_dir, stage_config), (s.data_dir, stage_data)])
    shutil.rmtree(load_config, ignore_errors=True)


def commit(service: Service, pairs: list[tuple[Path, Path]]) -> None:
    """Rename each staged directory into place; the old ones are in the backup."""
    for live, staged in pairs:
        replaced = installation.staging_path(live, "replaced")
        shutil.rmtree(replaced, ignore_errors=True)
        if live.exists():
            live.rename(replaced)
        staged.rename(live)
        shutil.rmtree(replaced, ignore_errors=True)
