# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Real OpenLDAP upgrades through the CLI: 2.4 hdb -> 2.5 mdb -> 2.6 mdb on a lived-in directory
(10^4 people, groups, non-ASCII names and DNs, binary photos, a password policy with the ppolicy
overlay), slapd.conf -> cn=config, and the way back 2.6 -> 2.5 -> 2.4 keeping a write made on 2.6.
Content is compared with slapcat and a digest written apart from the plugin's."""

from __future__ import annotations

import ldap_env
from ldap_env import OTHER, SUFFIX, make_directory, settings

from nixos_migrate.testing.cli import run_cli


def _cli(manifest_builder, d, target, *args, **extra):
    manifest_builder.service(
        "ldap", plugin="ldap", target=target, user=d.user.pw_name, settings=settings(d, *ldap_env.VERSIONS, **extra)
    )
    return run_cli(manifest_builder.write(), *args, timeout=900)


def _checks(result):
    return {c["name"]: c for s in result.json[0]["steps"] for c in s["checks"]}


def test_24_hdb_to_25_to_26_and_back_keeping_a_write(tmp_path, manifest_builder):
    d = make_directory(tmp_path / "ldap", "2.4", backend="hdb", people=10000)
    before = d.content("2.4")

    plan = _cli(manifest_builder, d, "2.6", "plan", "--json")
    assert plan.code == 0, plan.output
    steps = [(s["from_version"], s["to_version"]) for s in plan.json[0]["steps"]]
    assert steps == [("2.4", "2.5"), ("2.5", "2.6")]
    accepted = {c["name"]: c for c in plan.json[0]["checks"]}
    dry = accepted["OpenLDAP 2.5 accepts the rewritten config"]
    assert dry["ok"] and "{1}hdb -> {1}mdb" in dry["detail"], dry

    result = _cli(manifest_builder, d, "2.5", "up", "--json")
    assert result.code == 0, result.output
    checks = _checks(result)
    assert checks["slapcat equals the LDIF before the step"]["ok"], checks
    assert checks[f"entries under {SUFFIX}"]["detail"] == "10106"
    assert "olcDatabase={1}mdb.ldif" in {p.name for p in (d.config_dir / "cn=config").iterdir()}
    assert (d.data_dir / "data.mdb").exists() and not list(d.data_dir.glob("*.bdb"))
    assert d.content("2.5") == before

    result = _cli(manifest_builder, d, "2.6", "up", "--json")
    assert result.code == 0, result.output
    assert _checks(result)["slapcat equals the LDIF before the step"]["ok"]
    assert d.content("2.6") == before
    status = _cli(manifest_builder, d, "2.6", "status", "--json").json[0]
    assert (status["recorded"], status["data_version"], status["pending"]) == ("2.6", "2.6", [])

    d.add_entry("2.6", f"uid=late,ou=people,{SUFFIX}", {
        "objectClass": ["inetOrgPerson"], "uid": ["late"], "cn": ["Written on 2.6 ✓"], "sn": ["Spät"],
    })  # fmt: skip
    written = d.content("2.6")
    assert written != before

    down = _cli(manifest_builder, d, "2.6", "down", "ldap", "--to", "2.4", "--json")
    assert down.code == 0, down.output
    assert [s["step"]["direction"] for s in down.json[0]["steps"]] == ["down", "down"]
    assert d.content("2.4") == written
    assert "olcDatabase={1}hdb.ldif" in {p.name for p in (d.config_dir / "cn=config").iterdir()}
    assert _cli(manifest_builder, d, "2.4", "verify").code == 0


def test_slapd_conf_is_converted_to_cn_config(tmp_path, manifest_builder):
    d = make_directory(tmp_path / "ldap", "2.4", people=300, style="slapd.conf")
    before = d.content("2.4")
    result = _cli(manifest_builder, d, "2.5", "up", "--json", config_file=str(d.config_file))
    assert result.code == 0, result.output
    assert (d.config_dir / "cn=config.ldif").exists()
    assert "olcDatabase={1}mdb.ldif" in {p.name for p in (d.config_dir / "cn=config").iterdir()}
    assert d.content("2.5") == before
    assert _checks(result)["slapcat equals the LDIF before the step"]["ok"]


def test_two_databases_in_directories_of_their_own_go_up_together(tmp_path, manifest_builder):
    d = make_directory(tmp_path / "ldap", "2.4", people=300, second=True)
    before = {suffix: d.content("2.4", suffix=suffix) for suffix in (SUFFIX, OTHER)}
    result = _cli(manifest_builder, d, "2.5", "up", "--json")
    assert result.code == 0, result.output
    checks = _checks(result)
    assert checks[f"entries under {OTHER}"]["detail"] == "301"
    assert checks["slapcat equals the LDIF before the step"]["detail"].startswith("2 database(s)")
    assert {suffix: d.content("2.5", suffix=suffix) for suffix in (SUFFIX, OTHER)} == before
    assert (d.data_dir / "other" / "data.mdb").exists()
    names = {p.name for p in (d.config_dir / "cn=config").iterdir()}
    assert {"olcDatabase={1}mdb.ldif", "olcDatabase={2}mdb.ldif"} <= names
