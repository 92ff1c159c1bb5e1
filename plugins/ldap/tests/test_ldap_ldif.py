# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The LDIF layer on its own: folded lines, base64 DNs and values survive a round trip; the
digest ignores order only; the config rewrites do what each target needs."""

from __future__ import annotations

import pytest

from nixos_migrate_ldap import ldif

CONFIG = """dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: /old/lib/ldap
olcModuleLoad: {0}back_hdb.la
olcModuleLoad: {1}ppolicy

dn: cn={0}core,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: {0}core

dn: cn={1}ppolicy,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: {1}ppolicy

dn: cn={2}nis,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: {2}nis

dn: olcDatabase={1}hdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcHdbConfig
olcDatabase: {1}hdb
olcSuffix: dc=example,dc=org
olcDbDirectory: /var/lib/openldap/data
olcDbCacheSize: 1000
olcDbConfig: {0}set_cachesize 0 2097152 0
olcDbIndex: objectClass eq
structuralObjectClass: olcHdbConfig

dn: olcOverlay={0}ppolicy,olcDatabase={1}hdb,cn=config
objectClass: olcPPolicyConfig
olcOverlay: {0}ppolicy
"""


def test_round_trip_keeps_folded_and_base64_values():
    text = (
        "version: 1\n\ndn:: b3U9w5xuaXRzLGRjPWV4\n# a comment\nobjectClass: organizationalUnit\n"
        "ou:: w5xu\n dGl0cw==\njpegPhoto:: AAEC\n"
    )
    [entry] = ldif.parse(text)
    assert entry.dn == ":: b3U9w5xuaXRzLGRjPWV4"
    assert ldif.write([entry]).startswith("dn:: b3U9w5xuaXRzLGRjPWV4\n")
    assert entry.get("ou") == ["w5xudGl0cw=="]
    again = ldif.parse(ldif.write([entry]))
    assert ldif.digest(again) == ldif.digest([entry])


def test_digest_ignores_order_but_not_content():
    a = ldif.parse("dn: cn=a\ncn: a\nsn: x\n\ndn: cn=b\ncn: b\n")
    b = ldif.parse("dn: cn=b\ncn: b\n\ndn: cn=a\nsn: x\ncn: a\n")
    c = ldif.parse("dn: cn=b\ncn: b\n\ndn: cn=a\nsn: y\ncn: a\n")
    assert ldif.digest(a) == ldif.digest(b) != ldif.digest(c)


def test_hdb_becomes_mdb_for_25_with_its_overlays_and_schema_renumbered():
    how = ldif.Rewrite("2.5", "/new/lib/ldap", {"/var/lib/openldap/data": "/stage/data"}, 1 << 30)
    out = ldif.rewrite(ldif.parse(CONFIG), how)
    by_dn = {e.dn: e for e in out}
    db = by_dn["olcDatabase={1}mdb,cn=config"]
    assert db.get("objectClass") == ["olcDatabaseConfig", "olcMdbConfig"]
    assert db.first("structuralObjectClass") == "olcMdbConfig"
    assert db.first("olcDbCacheSize") is None and db.first("olcDbConfig") is None
    assert db.first("olcDbMaxSize") == str(1 << 30)
    assert db.first("olcDbDirectory") == "/stage/data"
    assert "olcOverlay={0}ppolicy,olcDatabase={1}mdb,cn=config" in by_dn
    module = by_dn["cn=module{0},cn=config"]
    assert module.get("olcModuleLoad") == ["{0}back_mdb", "{1}ppolicy"]
    assert module.first("olcModulePath") == "/new/lib/ldap"
    schema = [e.dn for e in out if e.dn.endswith(",cn=schema,cn=config")]
    assert schema == ["cn={0}core,cn=schema,cn=config", "cn={1}nis,cn=schema,cn=config"]
    assert any("dropped olcDbCacheSize, olcDbConfig" in c for c in how.changes)


@pytest.mark.parametrize("target", ["2.4"])
def test_going_back_below_25_adds_the_ppolicy_schema_again(target):
    config = ldif.rewrite(ldif.parse(CONFIG), ldif.Rewrite("2.5", None, {}, 1 << 30))
    schema_file = ldif.parse("dn: cn=ppolicy,cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: ppolicy\n")
    back = ldif.rewrite(config, ldif.Rewrite(target, None, {}, 1 << 30, schema_file))
    schema = [e.dn for e in back if e.dn.endswith(",cn=schema,cn=config")]
    assert schema[-1] == "cn={2}ppolicy,cn=schema,cn=config"
    db = next(e for e in back if e.first("olcDatabase"))
    assert db.first("olcDatabase") == "{1}mdb"  # 2.4 has mdb too: it stays
