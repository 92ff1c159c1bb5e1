"""What is known of an OpenLDAP installation without asking a running slapd: binaries, config,
databases, the version marker."""

from __future__ import annotations

import json
import os
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate_ldap import ldif
from nixos_migrate_ldap.settings import LdapSettings

MARKER = ".nixos-migrate-openldap-version"


OLD_BACKENDS = {"hdb", "bdb"}


def settings_of(service: Service) -> LdapSettings:
    return service.settings  # type: ignore[no-any-return]


def prefix(s: LdapSettings, version: str) -> Path:
    if version not in s.packages:
        raise MigrateError(
            f"no OpenLDAP {version} in settings.packages (have {', '.join(sorted(s.packages)) or 'none'})",
            hint=f"add {version!r} = <openldap {version} prefix> to settings.packages",
        )
    return s.packages[version]


def has_cn_config(s: LdapSettings) -> bool:
    return s.config_dir is not None and (s.config_dir / "cn=config.ldif").is_file()


def config_args(s: LdapSettings) -> list[str | Path]:
    """How slap* tools find the config as it is now."""
    if has_cn_config(s) and s.config_dir is not None:
        return ["-F", s.config_dir]
    if s.config_file is not None and s.config_file.is_file():
        return ["-f", s.config_file]
    raise MigrateError(f"no OpenLDAP configuration in {s.config_dir or s.config_file}")


def conf_directives(s: LdapSettings) -> list[tuple[str, str]]:
    """(directive, value) of each line of slapd.conf, value unquoted; none without one."""
    if s.config_file is None or not s.config_file.is_file():
        return []
    pairs = []
    for raw in s.config_file.read_text(errors="replace").splitlines():
        words = raw.split(None, 1)
        if len(words) == 2 and not words[0].startswith("#"):
            pairs.append((words[0], words[1].strip().strip('"')))
    return pairs


def offline_databases(s: LdapSettings) -> list[ldif.Database]:
    """The databases of the config as it is now, read from its files without any slapd."""
    if has_cn_config(s) and s.config_dir is not None:
        files = sorted((s.config_dir / "cn=config").glob("olcDatabase=*.ldif"))
        return ldif.databases([e for path in files for e in ldif.parse(path.read_text(errors="replace"))])
    found: list[ldif.Database] = []
    for key, value in conf_directives(s):
        if key == "database":
            found.append(ldif.Database("", str(len(found) + 1), value, None, None))
        elif key in ("suffix", "directory") and found and found[-1].backend not in ("frontend", "config", "monitor"):
            last = found[-1]
            found[-1] = ldif.Database(
                "", last.index, last.backend, value if key == "suffix" else last.suffix,
                value if key == "directory" else last.directory,
            )  # fmt: skip
    return [db for db in found if db.backend not in ("frontend", "config", "monitor")]


def running_slapd(s: LdapSettings) -> int | None:
    """The pid in the pid file the config names (olcPidFile / pidfile), if that process lives."""
    pidfile: str | None = None
    if has_cn_config(s) and s.config_dir is not None:
        pidfile = ldif.parse((s.config_dir / "cn=config.ldif").read_text(errors="replace"))[0].first("olcPidFile")
    else:
        pidfile = next((value for key, value in conf_directives(s) if key == "pidfile"), None)
    try:
        pid = int(Path(pidfile).read_text().split()[0]) if pidfile else None
    except (OSError, ValueError, IndexError):
        return None
    if pid is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def has_data(s: LdapSettings) -> bool:
    return s.data_dir.is_dir() and any(p.name != MARKER for p in s.data_dir.iterdir())


def has_config(s: LdapSettings) -> bool:
    return has_cn_config(s) or (s.config_file is not None and s.config_file.is_file())


def config_args_for_dump(s: LdapSettings, dumps: Path) -> list[str | Path]:
    """The config as the tools read it; a converted slapd.conf from `cnconfig.dump_config` if there is one."""
    converted = dumps / "converted.d"
    return ["-F", converted] if converted.is_dir() and not has_cn_config(s) else config_args(s)


def pending_ldif(service: Service) -> Path:
    pending = service.state_dir / "pending.json"
    if not pending.is_file():
        raise MigrateError(f"{service.name}: no LDIF dump of this step was recorded; back up first")
    return Path(json.loads(pending.read_text())["ldif"])


def staging_path(path: Path, what: str) -> Path:
    return path.parent / f".{path.name}.nixos-migrate-{what}"


def password(s: LdapSettings) -> str | None:
    if s.bind_password_file is None:
        return None
    try:
        return s.bind_password_file.read_text().rstrip("\n")
    except OSError as exc:
        raise MigrateError(f"cannot read bind_password_file {s.bind_password_file}: {exc.strerror}") from None
