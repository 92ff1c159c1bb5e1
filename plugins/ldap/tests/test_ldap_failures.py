# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Failures leave the directory exactly as it was (every file of the config and the data,
byte for byte): a target whose ppolicy module (which carries the ppolicy schema from 2.5) is
missing is refused by the pre-check's dry run before anything changes (so it never reaches a
restore), and a slapadd killed while it loads the data is restored from the backup. Failures at
the end of backup, up and verify are injected by the conformance suite."""

from __future__ import annotations

import shutil

import openldap_servers
from ldap_env import make_directory, settings

from nixos_migrate.testing import provision
from nixos_migrate.testing.cli import run_cli

KILLING_SLAPADD = """#!/usr/bin/python3
# the real slapadd of 2.5; when it loads a database (-b ... -l LDIF) it reads the LDIF through a
# pipe that delivers half of it, and is killed with SIGKILL while it waits for the rest
import os, signal, subprocess, sys, time
real, args = "{real}", sys.argv[1:]
if "-b" not in args or "-l" not in args:
    os.execv(real, [real, *args])
at = args.index("-l") + 1
source, fifo = args[at], args[at] + ".fifo"
os.mkfifo(fifo)
args[at] = fifo
loading = subprocess.Popen([real, *args])
text = open(source).read()
half = text[: text.rfind("\\n\\n", 0, len(text) // 2) + 2]
with open(fifo, "w") as pipe:
    pipe.write(half)
    pipe.flush()
    time.sleep(1.0)
    loading.send_signal(signal.SIGKILL)
    open("{marker}", "w").close()
    loading.wait()
    sys.exit(137)
"""


def _prefix_copy(tmp_path, name, *, without_modules=(), slapadd=None):
    """A copy of the 2.5 prefix: its module directory without `without_modules`, or another slapadd."""
    real = openldap_servers.openldap("2.5")
    prefix = tmp_path / name
    shutil.copytree(real, prefix, symlinks=True)
    modules = prefix / "lib" / "ldap"
    target = modules.resolve()
    modules.unlink()
    modules.mkdir()
    for module in target.iterdir():
        if not module.name.startswith(tuple(without_modules)):
            (modules / module.name).symlink_to(module)
    if slapadd is not None:
        (prefix / "sbin" / "slapadd").write_text(slapadd)
        (prefix / "sbin" / "slapadd").chmod(0o755)
    provision.traversable(prefix)
    return prefix


def _manifest(manifest_builder, d, prefix25, **extra):
    s = settings(d, "2.4", "2.5")
    s["packages"] = {"2.4": str(openldap_servers.openldap("2.4")), "2.5": str(prefix25)}
    manifest_builder.service("ldap", plugin="ldap", target="2.5", user=d.user.pw_name, settings=s | extra)
    return manifest_builder.write()


def test_a_target_without_the_ppolicy_schema_is_refused_before_anything_changes(tmp_path, manifest_builder):
    d = make_directory(tmp_path / "ldap", "2.4", people=500)
    before = d.files_digest()
    manifest = _manifest(manifest_builder, d, _prefix_copy(tmp_path, "no-ppolicy", without_modules=["ppolicy"]))
    result = run_cli(manifest, "up", timeout=600)
    assert result.code == 3, result.output
    assert "pre-check OpenLDAP 2.5 accepts the rewritten config failed" in result.stderr
    assert "ppolicy" in result.stderr
    assert d.files_digest() == before


def test_a_slapadd_killed_while_loading_restores_every_file(tmp_path, manifest_builder):
    d = make_directory(tmp_path / "ldap", "2.4", people=5000)
    content = d.content("2.4", with_config=True)
    before = d.files_digest()  # after the slapcat above, which touches BDB's region files
    marker = d.root / "killed"  # written by the wrapper, as the service user
    real = openldap_servers.openldap("2.5") / "sbin" / "slapadd"
    prefix = _prefix_copy(tmp_path, "killing", slapadd=KILLING_SLAPADD.format(real=real, marker=marker))
    manifest = _manifest(manifest_builder, d, prefix)
    result = run_cli(manifest, "up", timeout=600)
    assert result.code == 1, result.output
    assert "the data was restored" in result.stderr or "restored" in result.stderr, result.stderr
    assert marker.exists(), "slapadd finished before it could be killed"
    assert d.files_digest() == before
    assert d.content("2.4", with_config=True) == content
    status = run_cli(manifest, "status", "--json").json[0]
    assert (status["recorded"], status["data_version"], status["dirty"]) == ("2.4", "2.4", None)


def test_a_running_slapd_without_a_unit_is_refused(tmp_path, manifest_builder):
    d = make_directory(tmp_path / "ldap", "2.4", people=50)
    with d.slapd("2.4") as server:
        server.start(provision.port_open(d.port), timeout=30)
        before = d.content("2.4", with_config=True)
        result = run_cli(_manifest(manifest_builder, d, openldap_servers.openldap("2.5")), "up", timeout=600)
        assert result.code == 3, result.output
        assert "pre-check slapd not running failed: pid" in result.stderr
        assert d.content("2.4", with_config=True) == before
