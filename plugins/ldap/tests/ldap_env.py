# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Real OpenLDAP directories for the ldap plugin's tests: slapd 2.4.57 (bullseye), 2.5.13
(bookworm) and 2.6.10 (trixie, through its own loader), from Debian packages unpacked into the
cache; config and data built offline with slapadd as an unprivileged user; slapd started on a
loopback port and stopped by pid. The content digest here is written independently of the
plugin's LDIF code."""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path

import ldap3
import openldap_servers

from nixos_migrate.testing import provision

SUFFIX = "dc=example,dc=org"
OTHER = "dc=other,dc=net"  # the second database of `make_directory(..., second=True)`
ADMIN = f"cn=admin,{SUFFIX}"
SECRET = "s3cret-for-tests"
VERSIONS = ("2.4", "2.5", "2.6")


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def directory_ldif(people: int) -> str:
    """Users, groups, OUs, non-ASCII names and DNs, binary attributes, a password policy."""
    out = [
        f"dn: {SUFFIX}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups",
        f"dn: ou=policies,{SUFFIX}\nobjectClass: organizationalUnit\nou: policies",
        f"dn:: {b64(f'ou=Ünits Zürich,{SUFFIX}')}\nobjectClass: organizationalUnit\nou:: {b64('Ünits Zürich')}",
        f"dn: cn=default,ou=policies,{SUFFIX}\nobjectClass: device\nobjectClass: pwdPolicy\ncn: default\n"
        "pwdAttribute: userPassword\npwdMaxFailure: 5",
    ]
    for i in range(people):
        photo = f"\njpegPhoto:: {b64(hashlib.sha256(str(i).encode()).digest() * 8 + bytes(range(256)))}"
        out.append(
            f"dn: uid=user{i},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
            f"uid: user{i}\ncn:: {b64(f'Zoë Łukasz Müller {i}')}\nsn:: {b64('Müller-東京')}\n"
            f"uidNumber: {10000 + i}\ngidNumber: 100\nhomeDirectory: /home/user{i}\n"
            f"mail: user{i}@example.org\nuserPassword: pw-{i}" + (photo if i % 10 == 0 else "")
        )
    for g in range(max(1, people // 100)):
        members = "\n".join(
            f"member: uid=user{i},ou=people,{SUFFIX}" for i in range(g * 100, min(people, g * 100 + 100))
        )
        out.append(f"dn: cn=group{g},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: group{g}\n{members}")
    return "\n\n".join(out) + "\n"


def second_database(data: Path, backend: str) -> str:
    """A second database, in a directory of its own inside the data directory."""
    return f"""
dn: olcDatabase={{2}}{backend},cn=config
objectClass: olcDatabaseConfig
objectClass: olc{backend.capitalize()}Config
olcDatabase: {{2}}{backend}
olcSuffix: {OTHER}
olcDbDirectory: {data}/other
olcRootDN: cn=admin,{OTHER}
olcDbIndex: objectClass eq
"""


def other_ldif(n: int) -> str:
    head = f"dn: {OTHER}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: Other\ndc: other"
    rows = [f"dn: cn=device{i},{OTHER}\nobjectClass: device\ncn: device{i}\nserialNumber: {i:08d}" for i in range(n)]
    return "\n\n".join([head, *rows]) + "\n"


def config_ldif(prefix: Path, data: Path, backend: str) -> str:
    schema = prefix / "etc/ldap/schema"
    includes = "\n".join(f"include: file://{schema}/{n}.ldif" for n in ("core", "cosine", "nis", "inetorgperson"))
    ppolicy_schema = f"\ninclude: file://{schema}/ppolicy.ldif" if (schema / "ppolicy.ldif").exists() else ""
    extra = "olcDbCacheSize: 2000\nolcDbConfig: {0}set_cachesize 0 2097152 0\n" if backend in ("hdb", "bdb") else ""
    extra += "olcDbMaxSize: 1073741824\n" if backend == "mdb" else ""
    return f"""dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {data.parent}/slapd.pid

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {prefix}/lib/ldap
olcModuleLoad: {{0}}back_{backend}
olcModuleLoad: {{1}}ppolicy

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{includes}{ppolicy_schema}

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config

dn: olcDatabase={{1}}{backend},cn=config
objectClass: olcDatabaseConfig
objectClass: olc{backend.capitalize()}Config
olcDatabase: {{1}}{backend}
olcSuffix: {SUFFIX}
olcDbDirectory: {data}
olcRootDN: {ADMIN}
olcRootPW: {SECRET}
olcDbIndex: objectClass eq
olcDbIndex: uid eq
{extra}olcAccess: {{0}}to * by * read

dn: olcOverlay={{0}}ppolicy,olcDatabase={{1}}{backend},cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {{0}}ppolicy
olcPPolicyDefault: cn=default,ou=policies,{SUFFIX}
"""


def slapd_conf(prefix: Path, data: Path) -> str:
    schema = prefix / "etc/ldap/schema"
    includes = "\n".join(f"include {schema}/{n}.schema" for n in ("core", "cosine", "nis", "inetorgperson", "ppolicy"))
    return f"""{includes}
modulepath {prefix}/lib/ldap
moduleload back_hdb
moduleload ppolicy
database hdb
suffix "{SUFFIX}"
rootdn "{ADMIN}"
rootpw {SECRET}
directory {data}
index objectClass eq
access to * by * read
"""


@dataclass
class Directory:
    root: Path
    version: str
    user: pwd.struct_passwd
    port: int = field(default_factory=provision.free_port)

    @property
    def config_dir(self) -> Path:
        return self.root / "slapd.d"

    @property
    def config_file(self) -> Path:
        return self.root / "slapd.conf"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def password_file(self) -> Path:
        return self.root / "bind-password"

    def tool(self, name: str, version: str | None = None) -> Path:
        return openldap_servers.openldap(version or self.version) / "sbin" / name

    def as_user(self, argv: list[str | Path]) -> str:
        return provision.run_as(self.user, argv)

    def _config_args(self) -> list[str | Path]:
        if (self.config_dir / "cn=config.ldif").exists():
            return ["-F", self.config_dir]
        return ["-f", self.config_file]

    def content(self, version: str, with_config: bool = False, suffix: str = SUFFIX) -> str:
        """Digest of what slapcat of `version` prints of the data under `suffix` (and the config):
        records unfolded, lines and records sorted."""
        out = self.root / "dump.ldif"
        text = ""
        for selector in (["-b", suffix], *([["-n", "0"]] if with_config else [])):
            self.as_user([self.tool("slapcat", version), *self._config_args(), *selector, "-l", out])
            text += out.read_text() + "\n"
            out.unlink()
        unfolded = text.replace("\n ", "")
        records = sorted("\n".join(sorted(r.strip().splitlines())) for r in unfolded.split("\n\n") if r.strip())
        return hashlib.sha256("\n\n".join(records).encode()).hexdigest() + f" ({len(records)} records)"

    def files_digest(self) -> str:
        """Every file of the config and the data directory, byte for byte (for failure tests),
        but the database environment's scratch files that every open rewrites, slapd's own
        included: BDB's regions (__db.*), transaction logs and slapd's alock; LMDB's lock.mdb."""
        digest = hashlib.sha256()
        for base in (self.config_dir, self.config_file, self.data_dir):
            paths = (
                [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.exists() else []
            )
            for path in paths:
                if path.name in ("alock", "lock.mdb") or path.name.startswith(("__db.", "log.")):
                    continue
                digest.update(str(path.relative_to(self.root)).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()

    def slapd(self, version: str) -> provision.Server:
        """A real slapd of `version` on the current config, as the service runs it (start it)."""
        argv = [str(self.tool("slapd", version)), "-d", "0", *map(str, self._config_args()),
                "-h", f"ldap://127.0.0.1:{self.port}/"]  # fmt: skip
        return provision.Server(argv, self.user, log=self.root / "slapd.log")

    def add_entry(self, version: str, dn: str, attrs: dict[str, list[str]]) -> None:
        """Write through a real slapd of `version` (as a client of the service would)."""
        with self.slapd(version) as server:
            server.start(provision.port_open(self.port), timeout=30)
            conn = ldap3.Connection(f"ldap://127.0.0.1:{self.port}", ADMIN, SECRET, auto_bind=True)
            assert conn.add(dn, attributes=attrs), conn.result
            conn.unbind()


def make_directory(
    root: Path,
    version: str,
    *,
    backend: str = "hdb",
    people: int = 200,
    style: str = "cn=config",
    second: bool = False,
) -> Directory:
    user = provision.server_user()
    root.mkdir(parents=True, exist_ok=True)
    provision.traversable(root)
    d = Directory(root, version, user)
    prefix = openldap_servers.openldap(version)
    d.data_dir.mkdir()
    (root / "people.ldif").write_text(directory_ldif(people))
    d.password_file.write_text(SECRET + "\n")
    d.password_file.chmod(0o600)
    if style == "cn=config":
        d.config_dir.mkdir()
        config = config_ldif(prefix, d.data_dir, backend)
        if second:
            (d.data_dir / "other").mkdir()
            config += second_database(d.data_dir, backend)
        (root / "config.ldif").write_text(config)
        provision.chown_tree(root, user)
        d.as_user([d.tool("slapadd"), "-n", "0", "-F", d.config_dir, "-l", root / "config.ldif"])
    else:
        d.config_file.write_text(slapd_conf(prefix, d.data_dir))
        provision.chown_tree(root, user)
    d.as_user([d.tool("slapadd"), "-q", *d._config_args(), "-b", SUFFIX, "-l", root / "people.ldif"])
    if second:
        (root / "other.ldif").write_text(other_ldif(300))
        provision.chown_tree(root, user)
        d.as_user([d.tool("slapadd"), "-q", *d._config_args(), "-b", OTHER, "-l", root / "other.ldif"])
    os.chown(d.password_file, 0, 0)  # read by nixos-migrate (root), not by slapd
    return d


def settings(d: Directory, *versions: str, **extra: object) -> dict[str, object]:
    s: dict[str, object] = {
        "config_dir": str(d.config_dir),
        "data_dir": str(d.data_dir),
        "packages": {v: str(openldap_servers.openldap(v)) for v in versions},
        "bind_dn": ADMIN,
        "bind_password_file": str(d.password_file),
        "port": provision.free_port(),
        "max_size": 1 << 30,
    }
    return s | extra
