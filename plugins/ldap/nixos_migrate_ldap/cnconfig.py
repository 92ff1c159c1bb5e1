"""cn=config across versions: dumped with the old binaries, rewritten for the target, built and tested."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.model import Check, Step
from nixos_migrate_ldap import installation, ldif, slapd
from nixos_migrate_ldap.settings import LdapSettings


def dry_run(service: Service, step: Step) -> Check:
    """The target's slapadd and slaptest accept the rewritten config (in a scratch directory)."""
    s = installation.settings_of(service)
    scratch = service.state_dir / "check"
    shutil.rmtree(scratch, ignore_errors=True)
    service.private_dir(scratch)
    try:
        dump_config(service, installation.prefix(s, step.from_version or ""), scratch / "config.ldif", scratch)
        config = config_for(service, step, scratch / "config.ldif")
        new = installation.prefix(s, step.to_version)
        how = rewrite_for(s, step, {d.directory: str(scratch / "db") for d in ldif.databases(config) if d.directory})
        service.private_dir(scratch / "db")  # slapadd -n 0 wants the database directories to exist
        build_config(service, new, ldif.rewrite(config, how), scratch / "slapd.d", scratch / "target.ldif")
        service.run.run([slapd.tool(new, "slaptest"), "-u", "-F", scratch / "slapd.d"])
        return Check(f"OpenLDAP {step.to_version} accepts the rewritten config", True, "; ".join(how.changes))
    except MigrateError as exc:
        return Check(f"OpenLDAP {step.to_version} accepts the rewritten config", False, exc.message[-800:])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def dump_config(service: Service, prefix: Path, out: Path, work: Path) -> list[ldif.Entry]:
    """`slapcat -n 0` of the config as it is now (slapd.conf converted first, in `work`)."""
    s = installation.settings_of(service)
    args = installation.config_args(s)
    if args[0] == "-f":
        converted = service.private_dir(work / "converted.d")
        # slaptest writes slapd.d even when it complains about database files; slapcat judges
        service.run.run([slapd.tool(prefix, "slaptest"), *args, "-F", converted], check=False)
        args = ["-F", converted]
    service.run.run([slapd.tool(prefix, "slapcat"), *args, "-n", "0", "-l", out])
    return ldif.parse(out.read_text())


def rewrite_for(s: LdapSettings, step: Step, directories: dict[str, str]) -> ldif.Rewrite:
    prefix = installation.prefix(s, step.to_version)
    modules = slapd.module_dir(prefix)
    schema = slapd.schema_file(prefix, "ppolicy.ldif")
    return ldif.Rewrite(
        step.to_version,
        str(modules) if modules else None,
        directories,
        s.max_size,
        ldif.parse(schema.read_text()) if schema else None,
    )


def config_for(service: Service, step: Step, current: Path) -> list[ldif.Entry]:
    """The config a step starts from: for a downgrade, the one the older version had before the
    upgrade (kept in the state directory), else the current one (`current`, a slapcat -n 0)."""
    saved = service.state_dir / "configs" / f"{step.to_version}.ldif"
    source = saved if step.direction == "down" and saved.is_file() else current
    return ldif.parse(source.read_text())


def build_config(service: Service, prefix: Path, config: list[ldif.Entry], dest: Path, text_file: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    service.private_dir(dest)
    text_file.write_text(ldif.write(config))
    if os.geteuid() == 0:
        os.chown(text_file, service.run.identity.uid, service.run.identity.gid)
    service.run.run([slapd.tool(prefix, "slapadd"), "-n", "0", "-F", dest, "-l", text_file])
