"""Finding, loading and calling plugins.

Plugins are found through the entry-point group `nixos_migrate`; the entry-point name is the
plugin's name. `NIXOS_MIGRATE_PLUGINS` (comma-separated allow-list) and
`NIXOS_MIGRATE_DISABLE_PLUGINS` (deny-list) select which are loaded. A plugin that fails to
import or implements a hook the API does not have is not loaded; the failure is kept for the
`plugins` command and reported only when a service needs that plugin.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from nixos_migrate import hookspecs
from nixos_migrate.errors import MigrateError, PluginError

GROUP = "nixos_migrate"
ALLOW_ENV = "NIXOS_MIGRATE_PLUGINS"
DENY_ENV = "NIXOS_MIGRATE_DISABLE_PLUGINS"


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


@dataclass(frozen=True)
class LoadFailure:
    name: str
    distribution: str
    error: str
    detail: str


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


@dataclass
class PluginRegistry:
    """The loaded plugins and the failures, with hook callers restricted to one plugin."""

    manager: pluggy.PluginManager = field(default_factory=lambda: _new_manager())
    loaded: dict[str, LoadedPlugin] = field(default_factory=dict)
    failures: dict[str, LoadFailure] = field(default_factory=dict)

    @classmethod
    def discover(cls) -> PluginRegistry:
        registry = cls()
        allow, deny = _env_list(ALLOW_ENV), _env_list(DENY_ENV) or set()
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            if (allow is not None and ep.name not in allow) or ep.name in deny:
                continue
            registry._load_entry_point(ep)
        return registry

    def _load_entry_point(self, ep: EntryPoint) -> None:
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        if ep.name in self.loaded or ep.name in self.failures:
            self.failures[ep.name] = LoadFailure(
                ep.name, dist, "another distribution registers the same plugin name", ""
            )
            self.loaded.pop(ep.name, None)
            return
        try:
            obj = ep.load()
        except Exception as exc:
            self.failures[ep.name] = LoadFailure(
                ep.name, dist, f"import failed: {type(exc).__name__}: {exc}", traceback.format_exc()
            )
            return
        self.register(ep.name, obj, distribution=dist, version=version)

    def register(self, name: str, obj: ModuleType | object, *, distribution: str = "-", version: str = "-") -> None:
        """Register `obj` as plugin `name`; a contract violation is recorded as a failure."""
        try:
            self.manager.register(obj, name=name)
            self.manager.check_pending()
        except (pluggy.PluginValidationError, ValueError) as exc:
            if self.manager.is_registered(obj):
                self.manager.unregister(obj)
            self.failures[name] = LoadFailure(name, distribution, f"rejected: {exc}", "")
            return
        hooks = tuple(
            h
            for h in hookspecs.HOOK_NAMES
            if any(impl.plugin_name == name for impl in getattr(self.manager.hook, h).get_hookimpls())
        )
        self.loaded[name] = LoadedPlugin(name, distribution, version, hooks)

    def require(self, name: str) -> LoadedPlugin:
        if name in self.loaded:
            return self.loaded[name]
        if name in self.failures:
            failure = self.failures[name]
            raise PluginError(
                f"plugin {name!r} ({failure.distribution}) could not be loaded: {failure.error}",
                hint="run `nixos-migrate plugins` for details",
            )
        installed = ", ".join(sorted(self.loaded)) or "none"
        raise PluginError(
            f"unknown plugin {name!r} (installed: {installed})",
            hint=f"install the plugin or check {ALLOW_ENV}/{DENY_ENV}",
        )

    def hooks(self, name: str) -> PluginHooks:
        self.require(name)
        return PluginHooks(self.manager, name)


class PluginHooks:
    """Calls hooks on one plugin only (DESIGN §4: plugins never filter by service name)."""

    def __init__(self, manager: pluggy.PluginManager, name: str) -> None:
        self._manager = manager
        self.name = name
        self._others = [p for n, p in manager.list_name_plugin() if n != name]

    def implements(self, hook: str) -> bool:
        return any(impl.plugin_name == self.name for impl in getattr(self._manager.hook, hook).get_hookimpls())

    def call(self, hook: str, **kwargs: Any) -> Any:
        caller = self._manager.subset_hook_caller(hook, remove_plugins=self._others)
        return caller(**kwargs)


def call_hook(hooks: PluginHooks, hook: str, **kwargs: Any) -> Any:
    """Call a hook; a non-project exception becomes a `PluginError` naming plugin and hook."""
    try:
        return hooks.call(hook, **kwargs)
    except MigrateError:
        raise
    except Exception as exc:
        raise PluginError(f"plugin {hooks.name!r}, hook {hook}: {type(exc).__name__}: {exc}") from exc


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm
