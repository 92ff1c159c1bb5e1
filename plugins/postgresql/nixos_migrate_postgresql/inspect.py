"""What the upgrade carries from the old cluster to the new: asked of the running old server."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nixos_migrate_postgresql.cluster import Control
from nixos_migrate_postgresql.server import PrivateServer


@dataclass(frozen=True)
class Inspection:
    superuser: str
    encoding: str
    collate: str
    ctype: str
    provider: str
    """'c' libc, 'i' ICU, 'b' builtin (pg_database.datlocprovider; 'c' before 15)."""
    provider_locale: str | None
    checksums: bool
    wal_segment_bytes: int
    databases: list[str]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> Inspection | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, TypeError, ValueError):
            return None


# one question, so one psql call; template1's row holds the locale columns of every major
# (datlocprovider from 15, datlocale or daticulocale by major)
_QUESTION = """SELECT json_build_object(
  'template', (SELECT to_jsonb(d) FROM pg_database d WHERE datname = 'template1'),
  'encoding', (SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'template1'),
  'databases', (SELECT json_agg(datname ORDER BY datname) FROM pg_database))"""


def inspect(server: PrivateServer, control: Control, superuser: str | None) -> Inspection:
    user = server.find_superuser(superuser)
    answer: dict[str, Any] = server.query_json(_QUESTION, user)
    template: dict[str, Any] = answer.get("template") or {}
    return Inspection(
        superuser=user,
        encoding=str(answer.get("encoding") or "UTF8"),
        collate=str(template.get("datcollate", "C")),
        ctype=str(template.get("datctype", "C")),
        provider=str(template.get("datlocprovider", "c")),
        provider_locale=template.get("datlocale") or template.get("daticulocale"),
        checksums=control.checksums,
        wal_segment_bytes=control.wal_segment_bytes,
        databases=[str(n) for n in answer.get("databases") or []],
    )


def initdb_argv(initdb: Path, data_dir: Path, major: int, found: Inspection) -> list[str]:
    """initdb for a new cluster that pg_upgrade accepts: same superuser, encoding, locale,
    locale provider, checksums and WAL segment size as the old one."""
    argv = [
        str(initdb),
        "-D",
        str(data_dir),
        "-U",
        found.superuser,
        "-E",
        found.encoding,
        f"--lc-collate={found.collate}",
        f"--lc-ctype={found.ctype}",
        "--no-sync",
        "--auth=trust",
    ]
    if found.provider == "i" and major >= 15:
        argv += ["--locale-provider=icu", f"--icu-locale={found.provider_locale}"]
    elif found.provider == "b" and major >= 17:
        argv += ["--locale-provider=builtin", f"--builtin-locale={found.provider_locale}"]
    if found.checksums:
        argv.append("--data-checksums")
    elif major >= 18:  # 18 enables checksums by default; pg_upgrade needs both sides equal
        argv.append("--no-data-checksums")
    if found.wal_segment_bytes != 16 << 20:
        argv.append(f"--wal-segsize={found.wal_segment_bytes >> 20}")
    return argv
