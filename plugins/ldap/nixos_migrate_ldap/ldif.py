"""LDIF as slapcat writes it: parsing, writing, a canonical digest, and the cn=config rewrites
a target version needs.

Values stay in their LDIF spelling (`attr: text`, `attr:: base64`, `attr:< url`), so binary
attributes pass through untouched and a digest of two dumps compares exactly what slapcat wrote,
entryUUID and CSNs included. Attribute names compare case-insensitively, as in LDAP.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

Attribute = tuple[str, str, str]  # name, separator (":", "::", ":<"), value as written


@dataclass
class Entry:
    dn: str
    attrs: list[Attribute] = field(default_factory=list)

    def get(self, name: str) -> list[str]:
        return [v for a, _, v in self.attrs if a.lower() == name.lower()]

    def first(self, name: str) -> str | None:
        values = self.get(name)
        return values[0] if values else None

    def drop(self, name: str) -> None:
        self.attrs = [x for x in self.attrs if x[0].lower() != name.lower()]

    def set(self, name: str, values: list[str]) -> None:
        """Replace `name`'s values, keeping its position (or appending)."""
        at = next((i for i, x in enumerate(self.attrs) if x[0].lower() == name.lower()), len(self.attrs))
        rest = [x for x in self.attrs if x[0].lower() != name.lower()]
        at = min(at, len(rest))
        self.attrs = rest[:at] + [(name, ":", v) for v in values] + rest[at:]


_LINE = re.compile(r"^([A-Za-z0-9;.-]+)(::|:<|:) ?(.*)$")


def parse(text: str) -> list[Entry]:
    """Entries of an LDIF text (folded lines joined, comments and `version:` skipped)."""
    entries: list[Entry] = []
    lines: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]
        elif raw.startswith("#"):
            continue
        else:
            lines.append(raw)
    current: Entry | None = None
    for line in lines:
        if not line.strip():
            current = None
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"not an LDIF line: {line[:80]!r}")
        name, sep, value = match.groups()
        if current is None:
            if name.lower() == "version":
                continue
            if name.lower() != "dn":
                raise ValueError(f"an LDIF record must start with dn:, not {line[:80]!r}")
            current = Entry(f"{sep} {value}" if sep == "::" else value)
            entries.append(current)
        else:
            current.attrs.append((name, sep, value))
    return entries


def write(entries: list[Entry]) -> str:
    out = []
    for entry in entries:
        dn = f"dn{entry.dn}" if entry.dn.startswith(":: ") else f"dn: {entry.dn}"  # base64 DNs as read
        out.append("\n".join([dn, *(f"{a}{s} {v}" for a, s, v in entry.attrs)]))
    return "\n\n".join(out) + "\n"


def digest(entries: list[Entry]) -> str:
    """Order-independent: entries by DN, attributes by name and value, names case-folded."""
    canon = sorted(
        entry.dn.lower() + "\0" + "\0".join(sorted(f"{a.lower()}{s}{v}" for a, s, v in entry.attrs))
        for entry in entries
    )
    return hashlib.sha256("\n".join(canon).encode()).hexdigest()


# -- cn=config -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    dn: str
    index: str
    backend: str
    suffix: str | None
    directory: str | None


_DATABASE = re.compile(r"^\{(-?\d+)\}(\w+)$")
_ORDERED = re.compile(r"^\{(\d+)\}(.*)$")
#: attributes of olcMdbConfig (2.4-2.6); the rest of an hdb/bdb database's olcDb* are dropped
MDB_ATTRIBUTES = {
    "olcdbdirectory", "olcdbcheckpoint", "olcdbenvflags", "olcdbindex", "olcdbmaxentrysize",
    "olcdbmaxreaders", "olcdbmaxsize", "olcdbmode", "olcdbnosync", "olcdbrtxnsize", "olcdbsearchstack",
}  # fmt: skip


def databases(config: list[Entry]) -> list[Database]:
    """The databases of a cn=config dump that hold data (a suffix and a directory)."""
    found = []
    for entry in config:
        name = entry.first("olcDatabase")
        match = _DATABASE.match(name or "")
        if match is None:
            continue
        index, backend = match.groups()
        if backend in ("frontend", "config", "monitor"):
            continue
        found.append(Database(entry.dn, index, backend, entry.first("olcSuffix"), entry.first("olcDbDirectory")))
    return found


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


@dataclass
class Rewrite:
    """What the target needs of a cn=config dump (see `rewrite`)."""

    target: str
    module_dir: str | None
    directories: dict[str, str]
    max_size: int
    #: the target's ppolicy schema (schema/ppolicy.ldif), for going back below 2.5
    ppolicy_schema: list[Entry] | None = None
    changes: list[str] = field(default_factory=list)


def rewrite(config: list[Entry], how: Rewrite) -> list[Entry]:
    """The config for `how.target`: hdb/bdb become mdb from 2.5 (which removed them), module
    paths point at the target's modules, ppolicy's schema leaves cn=schema from 2.5 when the
    ppolicy module is loaded (the module defines it from 2.5: both would clash), mdb databases get
    a map size, and database directories are mapped."""
    out: list[Entry] = []
    renamed: dict[str, str] = {}  # database DN -> new DN, for the overlays below it
    to_mdb = version_key(how.target) >= (2, 5)
    ppolicy_module = any("ppolicy" in v for e in config for v in e.get("olcModuleLoad"))
    dropped_schema: list[str] = []
    for original in config:
        entry = Entry(original.dn, list(original.attrs))
        name = entry.first("olcDatabase") or ""
        match = _DATABASE.match(name)
        if entry.first("olcModuleLoad") is not None or entry.first("olcModulePath") is not None:
            _rewrite_modules(entry, how, to_mdb)
        if match and match.group(2) in ("hdb", "bdb") and to_mdb:
            index, old = match.groups()
            new_dn = entry.dn.replace(f"{{{index}}}{old}", f"{{{index}}}mdb", 1)
            renamed[entry.dn.lower()] = new_dn
            entry.dn = new_dn
            entry.set("olcDatabase", [f"{{{index}}}mdb"])
            for attr in ("objectClass", "structuralObjectClass"):
                entry.set(attr, ["olcMdbConfig" if v.lower() in ("olchdbconfig", "olcbdbconfig") else v
                                 for v in entry.get(attr)])  # fmt: skip
            gone = sorted({a for a, _, _ in entry.attrs if a.lower().startswith("olcdb")})
            gone = [a for a in gone if a.lower() not in MDB_ATTRIBUTES]
            for attr in gone:
                entry.drop(attr)
            how.changes.append(f"{name} -> {{{index}}}mdb" + (f" (dropped {', '.join(gone)})" if gone else ""))
            match = _DATABASE.match(entry.first("olcDatabase") or "")
        if match and match.group(2) == "mdb" and entry.first("olcDbMaxSize") is None:
            entry.attrs.append(("olcDbMaxSize", ":", str(how.max_size)))
            how.changes.append(f"{entry.first('olcDatabase')}: olcDbMaxSize {how.max_size}")
        parent = entry.dn.split(",", 1)[1] if "," in entry.dn else ""
        if parent.lower() in renamed:
            entry.dn = f"{entry.dn.split(',', 1)[0]},{renamed[parent.lower()]}"
        directory = entry.first("olcDbDirectory")
        if directory is not None and directory in how.directories:
            entry.set("olcDbDirectory", [how.directories[directory]])
        if _is_ppolicy_schema(entry) and ppolicy_module and version_key(how.target) >= (2, 5):
            dropped_schema.append(entry.dn)
            how.changes.append("ppolicy schema left to the ppolicy overlay (built in from 2.5)")
            continue
        out.append(entry)
    if dropped_schema:
        return _renumber_schema(out)
    has_schema = any(_is_ppolicy_schema(e) for e in out)
    if ppolicy_module and not to_mdb and not has_schema and how.ppolicy_schema:
        # below 2.5 the ppolicy module needs its schema in cn=schema again
        schema = [e for e in out if e.dn.lower().endswith(",cn=schema,cn=config")]
        at = out.index(schema[-1]) + 1 if schema else len(out)
        entry = Entry(f"cn={{{len(schema)}}}ppolicy,cn=schema,cn=config", list(how.ppolicy_schema[0].attrs))
        entry.set("cn", [f"{{{len(schema)}}}ppolicy"])
        out.insert(at, entry)
        how.changes.append("ppolicy schema added back to cn=schema (below 2.5 the module lacks it)")
    return out


def _rewrite_modules(entry: Entry, how: Rewrite, to_mdb: bool) -> None:
    if how.module_dir is not None and entry.first("olcModulePath") not in (None, how.module_dir):
        entry.set("olcModulePath", [how.module_dir])
    loads = []
    for value in entry.get("olcModuleLoad"):
        ordered = _ORDERED.match(value)
        module = ordered.group(2) if ordered else value
        base = re.sub(r"\.(la|so)$", "", module.rsplit("/", 1)[-1])
        if to_mdb and base in ("back_hdb", "back_bdb"):
            base = "back_mdb"
        if base not in loads:
            loads.append(base)
    if loads:
        entry.set("olcModuleLoad", [f"{{{i}}}{m}" for i, m in enumerate(loads)])


def _is_ppolicy_schema(entry: Entry) -> bool:
    first = entry.dn.split(",", 1)[0]
    ordered = _ORDERED.match(first.partition("=")[2])
    return entry.dn.lower().endswith(",cn=schema,cn=config") and ordered is not None and ordered.group(2) == "ppolicy"


def _renumber_schema(entries: list[Entry]) -> list[Entry]:
    """X-ORDERED schema entries must be numbered without gaps after one is left out."""
    number = 0
    for entry in entries:
        if not entry.dn.lower().endswith(",cn=schema,cn=config"):
            continue
        rdn, rest = entry.dn.split(",", 1)
        ordered = _ORDERED.match(rdn.partition("=")[2])
        if ordered is None:
            continue
        entry.dn = f"cn={{{number}}}{ordered.group(2)},{rest}"
        entry.set("cn", [f"{{{number}}}{ordered.group(2)}"])
        number += 1
    return entries
