"""Real OpenLDAP servers for the ldap plugin's tests: slapd of three Debian releases.

`openldap(version)` is an install prefix of that version, unpacked from Debian packages of the
release that ships it (`nixos_migrate.testing.provision.debian_prefix`; trixie's through its own
loader). On NixOS set `NIXOS_MIGRATE_OPENLDAP_<2_6>` to a store path instead.
"""

from __future__ import annotations

from pathlib import Path

from nixos_migrate.testing.provision import catalogued, debian_prefix

#: OpenLDAP versions reachable here: (suite, packages; the first holds slapd)
OPENLDAP = {
    "2.4": ("bullseye", ["slapd", "libldap-2.4-2", "libltdl7", "libwrap0", "libssl1.1"]),
    "2.5": ("bookworm", ["slapd", "libldap-2.5-0", "libltdl7", "libwrap0"]),
    "2.6": (
        "trixie",
        [
            "slapd", "libc6", "libldap2", "libltdl7", "libwrap0", "libssl3t64", "libsasl2-2", "libargon2-1",
            "libcrypt1", "libnsl2", "libtirpc3t64", "libgnutls30t64", "libzstd1",
        ],
    ),
}  # fmt: skip
OPENLDAP_TOOLS = ("slapd", "slapadd", "slapcat", "slaptest", "slapindex", "slappasswd", "slapschema")


def openldap(version: str) -> Path:
    """An OpenLDAP prefix (`sbin/slap*`, `lib/ldap` modules, `etc/ldap/schema`) of `version`
    (2.4, 2.5, 2.6). On NixOS set `NIXOS_MIGRATE_OPENLDAP_<2_6>` to a store path instead."""
    entry = catalogued("OpenLDAP", version, OPENLDAP)
    if isinstance(entry, Path):
        return entry
    suite, packages = entry
    return debian_prefix(
        f"openldap-{version}",
        suite,
        packages,
        {f"sbin/{tool}": f"usr/sbin/{tool}" for tool in OPENLDAP_TOOLS},
        {"lib/ldap": "usr/lib/ldap", "etc/ldap/schema": "etc/ldap/schema"},
    )
