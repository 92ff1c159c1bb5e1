"""`nixos-migrate new-plugin NAME`: write a plugin distribution that installs and passes its tests."""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path

from nixos_migrate.errors import UsageError

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def _files(name: str) -> dict[str, str]:
    root = resources.files("nixos_migrate") / "templates" / "plugin"
    layout = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        f"nixos_migrate_{name}/__init__.py": "pkg/__init__.py.tmpl",
        f"nixos_migrate_{name}/plugin.py": "pkg/plugin.py.tmpl",
        f"nixos_migrate_{name}/py.typed": None,
        "tests/test_conformance.py": "tests/test_conformance.py.tmpl",
        "nixos.nix": "nix/nixos.nix.tmpl",
        "nixos-defaults.nix": "nix/nixos-defaults.nix.tmpl",
    }
    out = {}
    for target, source in layout.items():
        text = "" if source is None else (root / source).read_text(encoding="utf-8")
        out[target] = text.replace("__NAME__", name).replace("__DIST__", name.replace("_", "-"))
    return out


def new_plugin(name: str, directory: Path | None) -> tuple[Path, list[Path]]:
    """Write the plugin `name` into `directory` (default `./nixos-migrate-NAME`); nothing on error."""
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise UsageError(
            f"{name!r} is not a valid plugin name",
            hint="use lower-case letters, digits and '_', starting with a letter (it becomes a Python package name)",
        )
    target = directory or Path(f"nixos-migrate-{name.replace('_', '-')}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target} exists and is not an empty directory", hint="choose another --dir")
    files = _files(name)  # read every template before writing anything
    written = []
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return target, written
