# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The ldap plugin passes the conformance suite on a real directory, 2.4 hdb -> 2.5 mdb."""

from __future__ import annotations

from pathlib import Path

from ldap_env import Directory, make_directory, settings

from nixos_migrate.testing import provision
from nixos_migrate.testing.conformance import Instance, PluginConformance


class TestLdapConformance(PluginConformance):
    plugin = "ldap"
    hops = [("2.4", "2.5")]

    def create(self, root: Path, version: str | None) -> Instance:
        if version is None:
            d = Directory(root / "ldap", "2.4", provision.server_user())
            d.root.mkdir(parents=True)
            provision.traversable(d.root)
            provision.chown_tree(d.root, d.user)
        else:
            d = make_directory(root / "ldap", version, people=300)
        return Instance(settings=settings(d, "2.4", "2.5"), spec={"user": d.user.pw_name}, data={"dir": d})

    def fingerprint(self, instance: Instance) -> str:
        d: Directory = instance.data["dir"]
        marker = d.data_dir / ".nixos-migrate-openldap-version"
        version = marker.read_text().strip() if marker.exists() else "2.4"
        # slapcat of config and data, operational attributes included: a logical down rebuilds the
        # database files, so bytes are compared by the failure tests (restores), not here
        return f"{version}: {d.content(version, with_config=True)}"
