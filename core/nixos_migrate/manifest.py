"""The manifest: services, their plugin, settings and target versions (DESIGN §6).

One schema, two spellings: JSON (written by the NixOS module) and TOML (written by hand). Every
error names the file and the key path, e.g. `manifest.toml: services.app.migrations[1].version`.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nixos_migrate.errors import ManifestError

DEFAULT_MANIFEST = Path("/etc/nixos-migrate/manifest.json")
MANIFEST_ENV = "NIXOS_MIGRATE_MANIFEST"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class StrictModel(BaseModel):
    """Base for manifest models: unknown keys are errors, values are not coerced across types."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _iso_date(value: str) -> str:
    try:
        parsed = datetime.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None
    if parsed.isoformat() != value:
        raise ValueError(f"{value!r} is not written YYYY-MM-DD")
    return value


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _absolute(path: Path) -> Path:
    if not path.is_absolute():
        raise ValueError(f"{str(path)!r} is not an absolute path")
    return path


def checked_versions(versions: Iterable[str], parse: Callable[[str], object], what: str = "package key") -> None:
    """For plugin settings validators: every one of `versions` is one `parse` (the plugin's
    version parser) accepts, else a ValueError naming it with the parser's reason."""
    for version in versions:
        try:
            parse(version)
        except Exception as exc:
            raise ValueError(f"{what} {version!r}: {exc}") from None


class VersionedSettings(BaseModel):
    """Base of a plugin's settings model whose `packages` are keyed by version and which may have
    an `initial_version`: both are checked with the plugin's version parser, `version_key` (a
    version it does not know is an error naming it). Unknown keys are errors, settings frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    @staticmethod
    def version_key(version: str) -> object:
        """The plugin's version parser; subclasses return `versions.key(version)`."""
        raise NotImplementedError

    @field_validator("packages", check_fields=False)
    @classmethod
    def _package_versions(cls, packages: dict[str, Path]) -> dict[str, Path]:
        checked_versions(packages, cls.version_key)
        return packages

    @field_validator("initial_version", check_fields=False)
    @classmethod
    def _initial_version(cls, version: str | None) -> str | None:
        checked_versions([version] if version else [], cls.version_key, "initial_version")
        return version


Version = Annotated[str, AfterValidator(_nonblank)]
#: For plugin settings models: a path that must be absolute (services run from any directory).
AbsolutePath = Annotated[Path, AfterValidator(_absolute)]


class Action(StrictModel):
    """One direction of an RFC 155 migration. Scripts are bash programs run as the service user."""

    script: str | None = None
    warn: str | None = None
    backup: str | None = None
    restore: str | None = None


class Migration(StrictModel):
    """An RFC 155 migration: a dated version with optional up and down actions."""

    version: Annotated[str, AfterValidator(_iso_date)]
    up: Action = Action()
    down: Action = Action()


class ServiceSpec(StrictModel):
    plugin: str | None = None
    target: Version
    unit: str | None = None
    user: str | None = None
    accept: list[Version] = []
    after: list[str] = []
    settings: dict[str, Any] = {}
    migrations: list[Migration] = []

    @model_validator(mode="after")
    def _migrations_ordered(self) -> ServiceSpec:
        seen: set[str] = set()
        for m in self.migrations:
            if m.version in seen:
                raise ValueError(f"migration version {m.version} appears twice")
            seen.add(m.version)
        # frozen model: sort through object.__setattr__ once, at validation
        object.__setattr__(self, "migrations", sorted(self.migrations, key=lambda m: m.version))
        return self


class Manifest(StrictModel):
    state_dir: Path = Path("/var/lib/nixos-migrate")
    backup_dir: Path | None = None
    generation: int | None = None
    services: dict[str, ServiceSpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _paths_from_strings(cls, data: Any) -> Any:
        # JSON and TOML have no path type; accept strings for the two path keys only
        if isinstance(data, dict):
            data = dict(data)
            for key in ("state_dir", "backup_dir"):
                if isinstance(data.get(key), str):
                    if not data[key] or not data[key].startswith("/"):
                        raise ValueError(f"{key} must be an absolute path, got {data[key]!r}")
                    data[key] = Path(data[key])
        return data

    @model_validator(mode="after")
    def _services_consistent(self) -> Manifest:
        for name, spec in self.services.items():
            if not _NAME.match(name):
                raise ValueError(f"service name {name!r} must be letters, digits, '_', '.', '@', '-' (max 64)")
            for dep in spec.after:
                if dep not in self.services:
                    raise ValueError(f"services.{name}.after: unknown service {dep!r}")
        service_order(self)  # raises on a cycle
        return self

    @property
    def backups_root(self) -> Path:
        return self.backup_dir or self.state_dir / "backups"

    def plugin_of(self, name: str) -> str:
        return self.services[name].plugin or name


def service_order(manifest: Manifest, names: Sequence[str] | None = None) -> list[str]:
    """`names` (default: all services) with the services they come `after`, dependencies first."""
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise ValueError(f"services form a cycle through `after`: {cycle}")
        visiting.append(name)
        for dep in manifest.services[name].after:
            visit(dep)
        visiting.pop()
        order.append(name)

    for name in names if names is not None else sorted(manifest.services):
        visit(name)
    return order


def key_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or part.startswith("function-"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_validation_error(source: str, exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        path = key_path([*([prefix] if prefix else []), *err["loc"]])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {path}: {msg}")
    return "\n".join(lines)


def parse_manifest(text: str, source: str, fmt: str) -> Manifest:
    """Parse manifest text in `fmt` ("json" or "toml"); `source` names it in errors."""
    # the NixOS module writes JSON: TOML's parser is imported for hand-written manifests only
    parse: Callable[[str], object] = json.loads
    error: type[ValueError] = json.JSONDecodeError
    if fmt != "json":
        import tomllib

        parse, error = tomllib.loads, tomllib.TOMLDecodeError
    try:
        raw: object = parse(text)
    except error as exc:
        raise ManifestError(f"{source}: not valid {fmt.upper()}: {exc}") from None
    except RecursionError:
        raise ManifestError(f"{source}: nested too deeply") from None
    if not isinstance(raw, Mapping):
        raise ManifestError(f"{source}: the top level must be a table/object")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(format_validation_error(source, exc)) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise ManifestError(f"{source}: {exc}") from None


def manifest_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get(MANIFEST_ENV)
    return Path(env) if env else DEFAULT_MANIFEST


def load_manifest(path: Path) -> Manifest:
    """Read and validate the manifest at `path` (`.toml` is TOML, anything else JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: no such manifest",
            hint=f"pass -m/--manifest PATH or set ${MANIFEST_ENV}",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None
    return parse_manifest(text, str(path), "toml" if path.suffix == ".toml" else "json")
