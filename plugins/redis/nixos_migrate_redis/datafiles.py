"""What a Redis/Valkey data directory holds, read offline.

The data is the RDB snapshot (`dbfilename`, dump.rdb) and, with append-only on, the AOF: a
single `appendonly.aof` before 7.0 (possibly beginning with an RDB preamble), the
`appendonlydir/` with a manifest naming a base file (RDB or AOF) and increments from 7.0 on. An
RDB file starts with `REDIS` and four digits (its format version), then auxiliary fields, the
first of which names the release that wrote it (`redis-ver` or `valkey-ver`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nixos_migrate import datadirs
from nixos_migrate.errors import MigrateError
from nixos_migrate_redis import transcode

_AUX = 0xFA


@dataclass(frozen=True)
class RdbHeader:
    path: Path
    rdb_version: int
    #: aux fields before the first key: redis-ver / valkey-ver, redis-bits, ctime, ...
    aux: dict[str, str] = field(default_factory=dict)

    @property
    def writer(self) -> tuple[str, str] | None:
        """(flavour, release) of the server that wrote the file, when it says."""
        if "valkey-ver" in self.aux:
            return "valkey", self.aux["valkey-ver"]
        if "redis-ver" in self.aux:
            return "redis", self.aux["redis-ver"]
        return None


@dataclass(frozen=True)
class Layout:
    """The data files of a directory."""

    rdb: Path | None
    #: the appendonlydir's manifest (7.0+)
    manifest: Path | None
    #: a single append-only file (before 7.0)
    legacy_aof: Path | None
    #: every RDB-formatted file: the snapshot, the AOF's base or preamble
    headers: tuple[RdbHeader, ...]

    @property
    def empty(self) -> bool:
        return self.rdb is None and self.manifest is None and self.legacy_aof is None

    @property
    def aof(self) -> str | None:
        if self.manifest is not None:
            return "multi-part (appendonlydir, 7.0+)"
        if self.legacy_aof is not None:
            return "single file (before 7.0)"
        return None

    @property
    def newest(self) -> RdbHeader | None:
        return max(self.headers, key=lambda h: h.rdb_version, default=None)


def read_header(path: Path) -> RdbHeader | None:
    """The header of an RDB-formatted file, None when the file is not one (a plain AOF)."""
    with open(path, "rb") as handle:
        data = handle.read(4096)
    if len(data) < 9 or not data.startswith(b"REDIS") or not data[5:9].isdigit():
        return None
    aux: dict[str, str] = {}
    pos = 9
    reader = transcode.Reader(data, path)
    try:
        while pos < len(data) and data[pos] == _AUX:
            name, pos = reader.string(pos + 1)
            value, pos = reader.string(pos)
            aux[name.decode(errors="replace")] = value.decode(errors="replace")
    except (IndexError, MigrateError):
        pass  # a header cut short by the 4 KiB read: what came before is enough
    return RdbHeader(path, int(data[5:9]), aux)


def manifest_files(manifest: Path) -> list[tuple[str, str]]:
    """(file name, type b/h/i) of an AOF manifest."""
    files = []
    for line in manifest.read_text(errors="replace").splitlines():
        words = line.split()
        fields = dict(zip(words[::2], words[1::2], strict=False))
        if "file" in fields:
            files.append((fields["file"], fields.get("type", "")))
    return files


def layout(data_dir: Path, dbfilename: str, appendfilename: str, appenddirname: str) -> Layout:
    rdb = data_dir / dbfilename
    manifest = data_dir / appenddirname / f"{appendfilename}.manifest"
    legacy = data_dir / appendfilename
    candidates = []
    if rdb.is_file():
        candidates.append(rdb)
    if manifest.is_file():
        candidates += [data_dir / appenddirname / name for name, kind in manifest_files(manifest) if kind == "b"]
    if legacy.is_file():
        candidates.append(legacy)
    headers = tuple(h for h in (read_header(p) for p in candidates if p.is_file()) if h is not None)
    return Layout(
        rdb if rdb.is_file() else None,
        manifest if manifest.is_file() else None,
        legacy if legacy.is_file() else None,
        headers,
    )


def foreign(data_dir: Path) -> str | None:
    """What another service keeps in `data_dir`, or None."""
    other = datadirs.foreign(data_dir, "Redis")
    return None if other is None else f"{other} data"


def check_dir(data_dir: Path) -> None:
    other = foreign(data_dir)
    if other is not None:
        raise MigrateError(
            f"{data_dir} holds {other}, not Redis/Valkey data",
            hint="settings.data_dir must be the server's `dir` (NixOS: /var/lib/redis-NAME)",
        )
