"""Content fingerprints of directory trees: what "the data is exactly as it was" means for files.

A tree's fingerprint covers every entry's relative path, type, permission bits, owner, and
content (file bytes, symlink target). Modification times are left out by default because a
restore legitimately rewrites directory mtimes; pass `mtimes=True` to include them.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_entries(root: Path, *, mtimes: bool = False) -> dict[str, str]:
    """One description string per entry below (and including) `root`, keyed by relative path."""
    entries: dict[str, str] = {}
    if not root.exists() and not root.is_symlink():
        return entries

    def describe(path: Path, rel: str) -> None:
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        base = f"{mode:o} {st.st_uid}:{st.st_gid}" + (f" {st.st_mtime_ns}" if mtimes else "")
        if stat.S_ISLNK(st.st_mode):
            entries[rel] = f"link {os.readlink(path)} {base}"
        elif stat.S_ISDIR(st.st_mode):
            entries[rel] = f"dir {base}"
        elif stat.S_ISREG(st.st_mode):
            entries[rel] = f"file {st.st_size} {file_digest(path)} {base}"
        else:
            entries[rel] = f"special {stat.S_IFMT(st.st_mode)} {st.st_rdev} {base}"

    describe(root, ".")
    if root.is_dir() and not root.is_symlink():
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                path = Path(dirpath) / name
                describe(path, str(path.relative_to(root)))
    return entries


def tree_digest(root: Path, *, mtimes: bool = False) -> str:
    """A sha256 over `tree_entries(root)`; equal digests mean equal trees."""
    h = hashlib.sha256()
    for rel, desc in sorted(tree_entries(root, mtimes=mtimes).items()):
        h.update(f"{rel}\0{desc}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def tree_size(root: Path) -> int:
    """Bytes of regular files below `root` (apparent size); symbolic links are not followed and
    unreadable directories are skipped, as os.walk does."""
    total = 0
    # scandir's entries know their type without a stat: a third of os.walk's time with Paths
    pending = [os.fspath(root)]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
    return total
