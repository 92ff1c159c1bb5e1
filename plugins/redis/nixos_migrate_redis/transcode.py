"""An RDB snapshot of a newer format rewritten, offline, in the older format of the down step's
target: most of the file is copied as it is, byte for byte.

Between format 10 (Redis 7.0) and 12 (Redis 7.4-8.0) three things changed for the data a 7.0
server can hold: small sets of text are packed in a listpack (type 20, from 7.2), a stream's
consumer keeps an active time beside its seen time (type 21, from 7.2), and hashes whose fields
expire have types of their own (22-25, 7.4). Everything else a newer server writes is in types
7.0 writes itself: strings, quicklists, listpack hashes and sorted sets, intsets, big structures,
streams' listpacks, expiries, LRU/LFU hints, functions. So a rewrite walks the file record by
record, copies each byte range as it is (the values stay as the newer server compressed them),
writes a packed set as a plain one and drops the consumers' active times, names the target's
release in the header and computes the file's CRC-64 again. Whatever it does not know (a
module's type, a hash with field expiries, an opcode of a later release) raises `Unconvertible`:
the plugin then copies every key with commands instead (copy.py).

The format: rdb.h and rdb.c of the Redis sources (types, opcodes, lengths, the stream layout),
listpack.md (the packed set), lzf_d.c (a compressed value).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from nixos_migrate.errors import MigrateError
from nixos_migrate.progress import Progress

#: RDB formats this module reads, and writes
SOURCES = frozenset({11, 12})
TARGETS = frozenset({10, 11})

_AUX, _RESIZEDB, _EXPIRE_MS, _EXPIRE_S, _SELECTDB, _EOF = 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF
_IDLE, _FREQ, _FUNCTION2, _SLOT_INFO = 0xF8, 0xF9, 0xF5, 0xF4
_SET, _SET_LISTPACK = 2, 20
_STREAM_V1, _STREAM_V2, _STREAM_V3 = 15, 19, 21
#: types whose value is one string (an encoded structure: ziplist, intset, listpack)
_ONE_STRING = frozenset({0, 9, 10, 11, 12, 13, 16, 17})
_NAMES = {6: "a module's type", 7: "a module's type"} | dict.fromkeys((22, 23, 24, 25), "a hash with field expiries")
#: the aux fields naming the release that wrote the file (datafiles.RdbHeader.writer reads them)
_WRITER = (b"redis-ver", b"valkey-ver")
#: a listpack entry's own length takes n bytes below the n-th limit (lpEncodeBacklen)
_BACKLEN = (128, 16383, 2097151, 268435455, 1 << 64)
_FLUSH = 64 << 20  # bytes copied at most between two progress updates


class Unconvertible(MigrateError):
    """The file holds something this rewrite does not carry (the copy by commands may)."""


@dataclass
class Converted:
    """What a rewrite did: keys per database, and the records it had to write anew."""

    keys: dict[int, int] = field(default_factory=dict)
    sets: int = 0
    streams: int = 0


def convertible(source_rdb: int, target_rdb: int) -> bool:
    return source_rdb in SOURCES and target_rdb in TARGETS and target_rdb < source_rdb


def _crc() -> Any:
    import anycrc  # a C CRC-64 (Jones, as Redis computes it): Python alone takes minutes per GiB

    return anycrc.Model("CRC64-REDIS")


def _length_bytes(n: int) -> bytes:
    """An RDB length."""
    if n < 0x40:
        return bytes((n,))
    if n < 0x4000:
        return bytes((0x40 | n >> 8, n & 0xFF))
    if n <= 0xFFFFFFFF:
        return b"\x80" + n.to_bytes(4, "big")
    return b"\x81" + n.to_bytes(8, "big")


def _string_bytes(value: bytes) -> bytes:
    """An RDB string, uncompressed."""
    return _length_bytes(len(value)) + value


class Reader:
    """Lengths and strings of an RDB file (mapped, or bytes) at a position; a read past the end
    raises IndexError (`convert` names it a cut file)."""

    def __init__(self, data: mmap.mmap | bytes, path: Path) -> None:
        self.data = data
        self.end = len(data)
        self.path = path

    def corrupt(self, pos: int, what: str) -> Unconvertible:
        return Unconvertible(f"{self.path} is not an RDB file this rewrite reads: {what} at byte {pos}")

    def length(self, pos: int) -> tuple[int, int]:
        """(length, next position); an encoded value where a length belongs is corruption."""
        data = self.data
        first = data[pos]
        if first < 0x40:
            return first, pos + 1
        if first < 0x80:
            return ((first & 0x3F) << 8) | data[pos + 1], pos + 2
        if first == 0x80:
            return int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
        if first == 0x81:
            return int.from_bytes(data[pos + 1 : pos + 9], "big"), pos + 9
        raise self.corrupt(pos, f"length byte {first:#x}")

    def skip_string(self, pos: int) -> int:
        data = self.data
        first = data[pos]
        if first < 0x40:
            end = pos + 1 + first
        elif first < 0x80:
            end = pos + 2 + (((first & 0x3F) << 8) | data[pos + 1])
        elif first == 0x80:
            end = pos + 5 + int.from_bytes(data[pos + 1 : pos + 5], "big")
        elif first == 0x81:
            end = pos + 9 + int.from_bytes(data[pos + 1 : pos + 9], "big")
        elif first == 0xC0:
            end = pos + 2
        elif first == 0xC1:
            end = pos + 3
        elif first == 0xC2:
            end = pos + 5
        elif first == 0xC3:
            packed, p = self.length(pos + 1)
            _, p = self.length(p)
            end = p + packed
        else:
            raise self.corrupt(pos, f"string byte {first:#x}")
        if end > self.end:
            raise self.corrupt(pos, "a string beyond the end of the file")
        return end

    def string(self, pos: int) -> tuple[bytes, int]:
        """(value, next position), uncompressed."""
        data = self.data
        first = data[pos]
        if first == 0xC3:
            packed, p = self.length(pos + 1)
            size, p = self.length(p)
            return lzf_decompress(bytes(data[p : p + packed]), size), p + packed
        if first >= 0xC0:
            width = {0xC0: 1, 0xC1: 2, 0xC2: 4}.get(first)
            if width is None:
                raise self.corrupt(pos, f"string byte {first:#x}")
            number = int.from_bytes(data[pos + 1 : pos + 1 + width], "little", signed=True)
            return str(number).encode(), pos + 1 + width
        size, p = self.length(pos)
        if p + size > self.end:
            raise self.corrupt(pos, "a string beyond the end of the file")
        return bytes(data[p : p + size]), p + size


def lzf_decompress(packed: bytes, size: int) -> bytes:
    """LZF (what Redis compresses values with): literal runs and back references."""
    out = bytearray()
    i, n = 0, len(packed)
    try:
        while i < n:
            ctrl = packed[i]
            i += 1
            if ctrl < 32:
                out += packed[i : i + ctrl + 1]
                i += ctrl + 1
                continue
            count = ctrl >> 5
            if count == 7:
                count += packed[i]
                i += 1
            ref = len(out) - ((ctrl & 0x1F) << 8) - packed[i] - 1
            i += 1
            count += 2
            if ref < 0:
                raise ValueError("a reference before the start")
            if ref + count <= len(out):
                out += out[ref : ref + count]
            else:  # overlapping: a run that repeats what it is writing
                for k in range(count):
                    out.append(out[ref + k])
    except (IndexError, ValueError) as exc:
        raise Unconvertible(f"a compressed value does not decompress ({exc})") from None
    if len(out) != size:
        raise Unconvertible(f"a compressed value decompresses to {len(out)} bytes, not {size}")
    return bytes(out)


def listpack_members(blob: bytes) -> list[bytes]:
    """The elements of a listpack (integers as their decimal), in order."""
    members: list[bytes] = []
    p = 6
    try:
        while blob[p] != 0xFF:
            b = blob[p]
            if b < 0x80:
                value, size = str(b).encode(), 1
            elif b < 0xC0:
                size = 1 + (b & 0x3F)
                value = blob[p + 1 : p + size]
            elif b < 0xE0:
                number = ((b & 0x1F) << 8) | blob[p + 1]
                value, size = str(number - (1 << 13) if number >= 1 << 12 else number).encode(), 2
            elif b < 0xF0:
                size = 2 + (((b & 0x0F) << 8) | blob[p + 1])
                value = blob[p + 2 : p + size]
            elif b == 0xF0:
                size = 5 + int.from_bytes(blob[p + 1 : p + 5], "little")
                value = blob[p + 5 : p + size]
            elif 0xF1 <= b <= 0xF4:
                width = {0xF1: 2, 0xF2: 3, 0xF3: 4, 0xF4: 8}[b]
                value = str(int.from_bytes(blob[p + 1 : p + 1 + width], "little", signed=True)).encode()
                size = 1 + width
            else:
                raise ValueError(f"entry byte {b:#x}")
            if p + size > len(blob):
                raise ValueError("an entry beyond the end")
            members.append(bytes(value))
            # each entry ends with its own length, in 1-5 bytes of 7 bits
            p += size + next(n for n, limit in enumerate(_BACKLEN, 1) if size < limit)
    except (IndexError, ValueError) as exc:
        raise Unconvertible(f"a packed set does not decode ({exc})") from None
    return members


class _Writer:
    """The output and its CRC-64, fed in byte ranges of the source and in new bytes."""

    def __init__(self, out: BinaryIO, source: memoryview) -> None:
        self.out = out
        self.source = source
        self.model = _crc()
        self.crc = 0

    def new(self, data: bytes) -> None:
        self.crc = self.model.calc(data, self.crc)
        self.out.write(data)

    def copy(self, start: int, end: int) -> None:
        if end > start:
            # released here, failure or not: the map cannot close while a slice of it lives
            with self.source[start:end] as part:
                self.crc = self.model.calc(part, self.crc)
                self.out.write(part)


def convert(src: Path, dest: Path, target_rdb: int, writer: tuple[str, str], progress: Progress) -> Converted:
    """`src` rewritten as `dest` in RDB format `target_rdb`, naming `writer` (flavour, release)
    as the release that wrote it; what it did. Unconvertible: `dest` is incomplete (the caller
    discards it), `src` untouched."""
    with open(src, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if len(data) < 9 or data[:5] != b"REDIS" or not data[5:9].isdigit():
            raise Unconvertible(f"{src} is not an RDB file")
        source_rdb = int(data[5:9])
        if not convertible(source_rdb, target_rdb):
            raise Unconvertible(f"RDB format {source_rdb} -> {target_rdb} is not a rewrite this plugin makes")
        view = memoryview(data)
        try:
            _check_sum(view, src)
            with open(dest, "wb") as out, progress.task(f"rewrite {src.name} in RDB format {target_rdb}",
                                                        total=len(data)) as task:  # fmt: skip
                reader = Reader(data, src)
                try:
                    done = _Walk(reader, _Writer(out, view), target_rdb, writer, task.advance).run()
                except IndexError:  # a read past the end: every record's reads are not checked one by one
                    raise reader.corrupt(len(data), "the end of the file inside a record") from None
                out.flush()
                os.fsync(out.fileno())
        finally:
            view.release()
    return done


def _check_sum(view: memoryview, src: Path) -> None:
    """The file's own CRC-64 (its last 8 bytes; 0 when it was written without one): the rewrite
    copies most bytes as they are, so a damaged file would otherwise pass on its damage."""
    stored = int.from_bytes(view[-8:], "little")
    with view[:-8] as body:
        damaged = stored and _crc().calc(body) != stored
    if damaged:
        raise MigrateError(
            f"{src} does not match its own checksum: it is damaged, or changed while it was read",
            hint="nothing was changed; restore the data directory from a backup if a server cannot load it either",
        )


class _Walk:
    def __init__(
        self, reader: Reader, out: _Writer, target_rdb: int, writer: tuple[str, str], advance: Callable[[int], None]
    ) -> None:
        self.r = reader
        self.w = out
        self.target = target_rdb
        self.writer = writer
        self.advance = advance
        self.done = Converted()
        self.copied = 0  # bytes of the source written or passed over so far
        self.run_start = 9  # the source's bytes from here on are still to be copied

    def flush(self, upto: int) -> None:
        self.w.copy(self.run_start, upto)
        self.run_start = upto

    def skip(self, upto: int) -> None:
        """The source's bytes up to `upto` are not copied."""
        self.run_start = upto

    def progressed(self, pos: int) -> None:
        if pos - self.copied >= _FLUSH:
            self.flush(pos)
            self.advance(pos - self.copied)
            self.copied = pos

    def run(self) -> Converted:
        r, w = self.r, self.w
        data = r.data
        w.new(b"REDIS%04d" % self.target)
        pos, db, wrote_writer = 9, 0, False
        while True:
            if pos >= r.end:
                raise r.corrupt(pos, "the end of the file before its EOF mark")
            op = data[pos]
            if op == _AUX:
                name, p = r.string(pos + 1)
                p = r.skip_string(p)
                if name in _WRITER:
                    self.flush(pos)
                    if not wrote_writer:
                        flavour, release = self.writer
                        aux = _string_bytes(f"{flavour}-ver".encode()) + _string_bytes(release.encode())
                        w.new(bytes((_AUX,)) + aux)
                        wrote_writer = True
                    self.skip(p)
                pos = p
            elif op == _SELECTDB:
                db, pos = r.length(pos + 1)
            elif op == _RESIZEDB:
                _, p = r.length(pos + 1)
                _, pos = r.length(p)
            elif op == _EXPIRE_MS:
                pos += 9
            elif op == _EXPIRE_S:
                pos += 5
            elif op == _IDLE:
                _, pos = r.length(pos + 1)
            elif op == _FREQ:
                pos += 2
            elif op == _FUNCTION2:
                pos = r.skip_string(pos + 1)
            elif op == _SLOT_INFO:  # a cluster's per-slot sizes, a hint for the load: 7.4+ only
                self.flush(pos)
                _, p = r.length(pos + 1)
                _, p = r.length(p)
                _, p = r.length(p)
                self.skip(p)
                pos = p
            elif op >= 0xF0 and op != _EOF:
                raise Unconvertible(f"{r.path} holds opcode {op:#x} (a module's data or a later release's), "
                                    "which this rewrite does not know")  # fmt: skip
            elif op == _EOF:
                self.flush(pos + 1)
                w.new(w.crc.to_bytes(8, "little"))
                self.advance(r.end - self.copied)
                return self.done
            else:
                pos = self.value(op, pos, db)
                self.done.keys[db] = self.done.keys.get(db, 0) + 1
                self.progressed(pos)

    def value(self, kind: int, start: int, db: int) -> int:
        """The key-value record at `start` (its type byte) copied or rewritten; its end."""
        r = self.r
        pos = r.skip_string(start + 1)  # the key
        if kind in _ONE_STRING:
            return r.skip_string(pos)
        if kind in (1, 2, 14):  # linked list, set, quicklist: strings
            n, pos = r.length(pos)
            for _ in range(n):
                pos = r.skip_string(pos)
            return pos
        if kind == 4:  # hash: field, value pairs
            n, pos = r.length(pos)
            for _ in range(2 * n):
                pos = r.skip_string(pos)
            return pos
        if kind == 3:  # sorted set, scores as text with a one-byte length (253-255: nan, +inf, -inf)
            n, pos = r.length(pos)
            for _ in range(n):
                pos = r.skip_string(pos)
                size = r.data[pos]
                pos += 1 + (size if size < 253 else 0)
            return pos
        if kind == 5:  # sorted set, binary scores
            n, pos = r.length(pos)
            for _ in range(n):
                pos = r.skip_string(pos) + 8
            return pos
        if kind == 18:  # quicklist 2: (container kind, node) pairs
            n, pos = r.length(pos)
            for _ in range(n):
                _, pos = r.length(pos)
                pos = r.skip_string(pos)
            return pos
        if kind == _SET_LISTPACK:
            if self.target >= 11:
                return r.skip_string(pos)
            return self.packed_set(start, pos)
        if kind in (_STREAM_V1, _STREAM_V2, _STREAM_V3):
            return self.stream(kind, start, pos)
        name = _NAMES.get(kind, f"RDB type {kind}, which this rewrite does not know")
        key, _ = r.string(start + 1)
        raise Unconvertible(f"db{db}:{key.decode(errors='backslashreplace')} is {name}")

    def packed_set(self, start: int, pos: int) -> int:
        """A set packed in a listpack (7.2+) written as a plain set, which every version loads
        (into an intset when its members are integers, as 7.0 keeps such sets)."""
        r = self.r
        blob, end = r.string(pos)
        members = listpack_members(blob)
        self.flush(start)
        self.w.new(bytes((_SET,)))
        self.w.copy(start + 1, pos)  # the key as it is
        self.w.new(_length_bytes(len(members)) + b"".join(_string_bytes(m) for m in members))
        self.skip(end)
        self.done.sets += 1
        return end

    def stream(self, kind: int, start: int, pos: int) -> int:
        """A stream's record; format 3 (7.2+) written as format 2 without the consumers' active
        times (7.0 has only the seen time, which stays)."""
        r = self.r
        length = r.length
        rewrite = kind == _STREAM_V3 and self.target < 11
        if rewrite:
            self.flush(start)
            self.w.new(bytes((_STREAM_V2,)))
            self.skip(start + 1)
        n, pos = length(pos)
        for _ in range(2 * n):  # (master id, listpack) per node
            pos = r.skip_string(pos)
        for _ in range(3 if kind == _STREAM_V1 else 8):
            # length, last id; from format 2: first id, max deleted id, entries added
            _, pos = length(pos)
        groups, pos = length(pos)
        for _ in range(groups):
            pos = r.skip_string(pos)  # name
            for _ in range(2 if kind == _STREAM_V1 else 3):  # last id; from format 2: entries read
                _, pos = length(pos)
            pending, pos = length(pos)
            for _ in range(pending):
                pos += 16 + 8  # the entry's id, its delivery time
                _, pos = length(pos)  # delivery count
            consumers, pos = length(pos)
            for _ in range(consumers):
                pos = r.skip_string(pos) + 8  # name, seen time
                if kind == _STREAM_V3:
                    if rewrite:
                        self.flush(pos)
                        self.skip(pos + 8)
                    pos += 8  # active time
                owned, pos = length(pos)
                pos += 16 * owned
            if pos > r.end:
                raise r.corrupt(pos, "a stream beyond the end of the file")
        if rewrite:
            self.done.streams += 1
        return pos
