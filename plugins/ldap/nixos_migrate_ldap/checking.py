"""What verify compares: entry counts through a private slapd, dumps against those taken before the step."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.model import Check
from nixos_migrate_ldap import installation, ldif, slapd
from nixos_migrate_ldap.settings import LdapSettings


def count(s: LdapSettings, suffixes: list[str]) -> dict[str, int]:
    # imported here: every nixos-migrate run loads every plugin, and ldap3 takes a quarter second
    import ldap3

    server = ldap3.Server("127.0.0.1", port=s.port, get_info=ldap3.NONE, connect_timeout=10)
    conn = ldap3.Connection(
        server, user=s.bind_dn, password=installation.password(s), auto_bind=False, receive_timeout=60
    )
    try:
        if not conn.bind():
            raise MigrateError(f"bind as {s.bind_dn or 'anonymous'} failed: {conn.result.get('description')}")
        counts = {}
        for suffix in suffixes:
            entries = conn.extend.standard.paged_search(
                suffix, "(objectClass=*)", ldap3.SUBTREE, attributes=["1.1"], paged_size=1000, generator=True
            )
            counts[suffix] = sum(1 for e in entries if e.get("type") == "searchResEntry")
        return counts
    finally:
        conn.unbind()


def compare_dumps(service: Service, prefix: Path, expected: dict[str, dict[str, Any]]) -> list[Check]:
    """slapcat of every database equals the dump before the step, entryUUID and CSNs included."""
    s = installation.settings_of(service)
    work = service.private_dir(service.state_dir / "verify")
    problems = []
    try:
        for suffix, want in expected.items():
            out = work / f"{want['index']}.ldif"
            service.run.run([slapd.tool(prefix, "slapcat"), *installation.config_args(s), "-b", suffix, "-l", out])
            entries = ldif.parse(out.read_text())
            if ldif.digest(entries) != want["digest"]:
                problems.append(f"{suffix}: {len(entries)} entries differ from the {want['count']} dumped before")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    detail = "; ".join(problems) or f"{len(expected)} database(s), {sum(w['count'] for w in expected.values())} entries"
    return [Check("slapcat equals the LDIF before the step", not problems, detail)]
