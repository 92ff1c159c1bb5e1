"""The NixOS face: every .nix file parses; the module's pure part (nixos/lib.nix: option values ->
manifest, units, pre-switch check, PostgreSQL convenience) is evaluated with Debian's nix-bin
(`nix-instantiate --eval --strict --json`), and what it produces is fed to the real tool: the
manifest to the Python loader and the plugins' settings models, the units' ExecStart and the
pre-switch check run as commands against real data.

nixpkgs is not reachable from here, so module.nix itself (option declarations through nixpkgs'
`lib`) is only parsed; nixos/tests/postgresql-upgrade.nix runs it in a NixOS VM where nixpkgs and
KVM exist.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nixos_migrate.manifest import parse_manifest
from nixos_migrate.plugins import PluginRegistry

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "nixos" / "lib.nix"
NIX_FILES = sorted(p for p in REPO.rglob("*.nix") if ".venv" not in p.parts and ".tools" not in p.parts)
EXE = str(Path(sys.executable).parent / "nixos-migrate")


def _nix(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("nix-instantiate")
    if tool is None:
        pytest.fail("nix-instantiate is missing: install Debian's nix-bin (`./run tests` does)")
    return subprocess.run(
        [tool, "--store", "dummy://", *args], capture_output=True, text=True, timeout=120, check=False
    )


def nix_eval(expr: str) -> Any:
    result = _nix("--eval", "--strict", "--json", "-E", f"let lib = import {LIB}; in {expr}")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def nix_error(expr: str) -> str:
    result = _nix("--eval", "--strict", "--json", "-E", f"let lib = import {LIB}; in {expr}")
    assert result.returncode != 0, result.stdout
    return result.stderr


def test_there_are_nix_files_and_every_one_parses():
    names = {str(p.relative_to(REPO)) for p in NIX_FILES}
    assert {"flake.nix", "nix/package.nix", "nixos/module.nix", "nixos/lib.nix"} <= names
    assert "nixos/tests/postgresql-upgrade.nix" in names
    for path in NIX_FILES:
        result = _nix("--parse", str(path))
        assert result.returncode == 0, f"{path}: {result.stderr}"


CONFIGURATIONS = {
    "empty": "{ }",
    "scripts": """{
        stateDir = "/var/lib/nm";
        backupDir = "/srv/backups";
        services.app = {
          plugin = "scripts";
          target = "2024-05-01";
          user = "app";
          accept = [ "2024-05-01" ];
          settings = { paths = [ "/var/lib/app" ]; environment.MODE = "prod"; };
          migrations = [
            { version = "2024-05-01"; up = { script = "echo up"; warn = "slow"; }; down.script = "echo down"; }
            { version = "2024-01-10"; up = { script = "a"; backup = "b"; restore = "c"; }; }
          ];
        };
        services.off = { target = "1"; enable = false; };
      }""",
    "ordered": """{
        services.db = { plugin = "postgresql"; target = "17"; unit = "postgresql.service";
                        settings.data_dir = "/var/lib/postgresql/17"; };
        services.web = { plugin = "scripts"; target = "2024-01-01"; after = [ "db" ]; autoApply = true;
                         settings.paths = [ "/srv/web" ]; };
      }""",
}


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_manifest_from_options_is_valid_for_the_python_loader(name):
    data = nix_eval(f"lib.manifest ({CONFIGURATIONS[name]})")
    manifest = parse_manifest(json.dumps(data), f"{name}.json", "json")
    assert manifest.state_dir == Path(data.get("state_dir", "/var/lib/nixos-migrate"))
    if name == "scripts":
        assert str(manifest.backups_root) == "/srv/backups"  # backupDir -> backup_dir
        assert set(manifest.services) == {"app"}  # enable = false leaves a service out
        app = manifest.services["app"]
        assert [m.version for m in app.migrations] == ["2024-01-10", "2024-05-01"]
        assert app.migrations[1].up.warn == "slow" and app.migrations[1].down.script == "echo down"
        assert "autoApply" not in json.dumps(data) and "enable" not in data["services"]["app"]
    if name == "ordered":
        assert manifest.services["web"].after == ["db"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            '{ services.app = { target = "x";'
            ' migrations = [ { version = "2024-05-01"; } { version = "24-5-1"; } ]; }; }',
            'services.nixos-migrate.services.app.migrations[1].version: "24-5-1" is not a date (YYYY-MM-DD)',
        ),
        (
            '{ services.app = { target = "x"; migrations = [ { version = "2023-02-29"; } ]; }; }',
            '"2023-02-29" is not a date (YYYY-MM-DD): no such day',
        ),
        (
            '{ services.web = { target = "1"; after = [ "db" ]; }; }',
            'services.nixos-migrate.services.web.after: unknown service "db"',
        ),
        ('{ services.app = { plugin = "scripts"; }; }', "services.nixos-migrate.services.app.target: must be set"),
        (
            '{ services.app = { target = "x"; migrations = [ { version = "2024-01-01"; up.scrpit = "x"; } ]; }; }',
            "services.app.migrations[0].up.scrpit: unknown key",
        ),
        ('{ services."bad name" = { target = "1"; }; }', "a service name is letters"),
    ],
)
def test_bad_configuration_fails_evaluation_with_the_option_path(config, message):
    assert message in nix_error(f"lib.manifest ({config})")


def test_leap_days_are_dates():
    assert nix_eval('map lib.dateProblem [ "2024-02-29" "2000-02-29" "2024-12-31" ]') == [None, None, None]
    assert all(nix_eval('map lib.dateProblem [ "1900-02-29" "2024-04-31" "2024-00-10" "0000-01-01" ]'))


def _units(config: str, exe: str = "/nix/store/x-nixos-migrate/bin/nixos-migrate", manifest: str = "/etc/m.json"):
    return nix_eval(f'lib.units {{ cfg = {config}; exe = "{exe}"; manifestFile = "{manifest}"; }}')


def test_units_are_ordered_before_the_service_and_required_by_it():
    units = _units(CONFIGURATIONS["ordered"])
    assert set(units) == {"db", "web"}
    db, web = units["db"], units["web"]
    assert db["before"] == ["postgresql.service"] and db["requiredBy"] == ["postgresql.service"]
    assert db["wantedBy"] == []
    assert db["serviceConfig"]["Type"] == "oneshot" and db["serviceConfig"]["RemainAfterExit"] is True
    # auto-apply off (the default): the plan is the gate
    assert shlex.split(db["serviceConfig"]["ExecStart"]) == [
        "/nix/store/x-nixos-migrate/bin/nixos-migrate",
        "--manifest",
        "/etc/m.json",
        "plan",
        "--no-checks",
        "--fail-if-pending",
        "db",
    ]
    # auto-apply on: up; `after` orders the migration units too; no unit: wanted at boot
    assert shlex.split(web["serviceConfig"]["ExecStart"])[3:] == ["up", "web"]
    assert "nixos-migrate-db.service" in web["after"] and web["requires"] == ["nixos-migrate-db.service"]
    assert web["before"] == [] and web["wantedBy"] == ["multi-user.target"]
    assert db["environment"]["NIXOS_MIGRATE_MANIFEST"] == "/etc/m.json"


def test_settle_units_follow_the_service_and_run_the_real_settle_command(tmp_path):
    """One settle unit per service with a unit, ordered after it and wanted by it (a failure never
    stops the service); its ExecStart is a real command against a real manifest."""
    units = nix_eval(
        f'lib.settleUnits {{ cfg = {CONFIGURATIONS["ordered"]}; exe = "/bin/nm"; manifestFile = "/etc/m.json"; }}'
    )
    assert set(units) == {"nixos-migrate-db-settle"}  # web has no unit: `up` settles at once
    db = units["nixos-migrate-db-settle"]
    assert db["after"] == ["postgresql.service"] and db["wantedBy"] == ["postgresql.service"]
    assert "requires" not in db and "requiredBy" not in db
    assert shlex.split(db["serviceConfig"]["ExecStart"]) == ["/bin/nm", "--manifest", "/etc/m.json", "settle", "db"]

    data = tmp_path / "data"
    data.mkdir()
    config = _scripts_config(data, auto_apply=True, state=tmp_path / "state").replace(
        'plugin = "scripts";', 'plugin = "scripts"; unit = "app.service";'
    )
    manifest = _write_manifest(tmp_path, config)
    settle = nix_eval(f'lib.settleUnits {{ cfg = {config}; exe = "{EXE}"; manifestFile = "{manifest}"; }}')
    result = _run(shlex.split(settle["nixos-migrate-app-settle"]["serviceConfig"]["ExecStart"]))
    assert result.returncode == 0, result.stderr
    assert "app: nothing left to do" in result.stdout


def _scripts_config(data: Path, *, auto_apply: bool, state: Path, accept: bool = True) -> str:
    return f"""{{
        stateDir = "{state}";
        services.app = {{
          plugin = "scripts"; target = "2024-05-01"; autoApply = {"true" if auto_apply else "false"};
          accept = [ {'"2024-05-01"' if accept else ""} ];
          settings = {{ paths = [ "{data}" ]; environment.DATA = "{data}"; }};
          migrations = [ {{ version = "2024-05-01";
                            up = {{ script = "echo migrated > $DATA/version"; warn = "rewrites the data"; }}; }} ];
        }};
      }}"""


def _write_manifest(tmp_path: Path, config: str) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(nix_eval(f"lib.manifest ({config})")))
    return path


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("auto_apply", [False, True])
def test_the_generated_unit_command_gates_or_migrates_real_data(tmp_path, auto_apply):
    data = tmp_path / "data"
    data.mkdir()
    (data / "content").write_text("precious\n")
    config = _scripts_config(data, auto_apply=auto_apply, state=tmp_path / "state")
    manifest = _write_manifest(tmp_path, config)
    unit = _units(config, exe=EXE, manifest=str(manifest))["app"]
    result = _run(shlex.split(unit["serviceConfig"]["ExecStart"]))
    if auto_apply:
        assert result.returncode == 0, result.stderr
        assert (data / "version").read_text() == "migrated\n"
    else:
        assert result.returncode == 3, result.stderr
        assert "FAILED: the data is not at its target version yet" in result.stderr
        assert "nixos-migrate up app" in result.stderr
        assert not (data / "version").exists()
    assert (data / "content").read_text() == "precious\n"


def test_pre_switch_check_refuses_a_configuration_that_lacks_an_acceptance(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for accept, expected in ((False, 1), (True, 0)):
        config = _scripts_config(data, auto_apply=False, state=tmp_path / "state", accept=accept)
        manifest = _write_manifest(tmp_path, config)
        script = nix_eval(f'lib.preSwitchCheck {{ exe = "{EXE}"; manifestFile = "{manifest}"; }}')
        switch = _run(["bash", "-euc", script, "check", "/nix/store/new-system", "switch"])
        assert switch.returncode == expected, switch.stdout + switch.stderr
        if not accept:
            assert "needs acceptance: rewrites the data" in switch.stderr
            assert "not switching" in switch.stderr
        # other actions (dry-activate) never run it
        assert _run(["bash", "-euc", script, "check", "/nix/store/new-system", "dry-activate"]).returncode == 0
    assert not (data / "version").exists()  # the check changed nothing


PG_DEFAULTS = f"""(import {REPO}/plugins/postgresql/nixos-defaults.nix {{
  current = "17"; dataDir = "/var/lib/postgresql/17"; port = 5433;
  packages = {{ "15" = "/nix/store/a-postgresql-15"; "16" = "/nix/store/b-postgresql-16";
               "17" = "/nix/store/c-postgresql-17"; }};
}})"""
LDAP_DEFAULTS = f"""(import {REPO}/plugins/ldap/nixos-defaults.nix {{
  packages = {{ "2.5" = "/nix/store/d-openldap-2.5.13"; "2.6" = "/nix/store/e-openldap-2.6.10"; }};
  databaseDirs = [ "/var/lib/openldap/db" ];
}})"""


def test_postgresql_defaults_come_from_services_postgresql():
    d = nix_eval(PG_DEFAULTS)
    assert (d["unit"], d["user"]) == ("postgresql.service", "postgres")
    settings = d["settings"]
    assert settings["old_data_dir"] == "/var/lib/postgresql/16"  # the nearest older major
    assert settings["packages"]["16"] == "/nix/store/b-postgresql-16"
    assert (settings["data_dir"], settings["service_port"]) == ("/var/lib/postgresql/17", 5433)
    # back on the generation with 16 after an upgrade to 17: the data is found in 17's directory
    back = nix_eval(
        f'import {REPO}/plugins/postgresql/nixos-defaults.nix {{ current = "16"; dataDir = "/var/lib/postgresql/16";'
        ' packages = { "16" = "/nix/store/b"; "17" = "/nix/store/c"; }; }'
    )
    assert back["settings"]["old_data_dir"] == "/var/lib/postgresql/17"
    assert "lacks the current major 18" in nix_error(
        f'import {REPO}/plugins/postgresql/nixos-defaults.nix {{ current = "18"; dataDir = "/d";'
        ' packages = { "17" = "/p"; }; }'
    )


# the generic spelling, and what services.nixos-migrate.postgresql (plugins/postgresql/nixos.nix)
# declares: both over the defaults the fragment sets from services.postgresql
SPELLINGS = {
    "generic": '{ target = "17"; accept = [ "17" ]; }',
    "convenience": '{ target = "17"; autoApply = false; accept = [ "17" ]; }',
    "generic, options as the module passes them": (
        '{ enable = true; plugin = null; target = "17"; unit = null; user = null; accept = [ "17" ];'
        " after = [ ]; settings = { }; autoApply = false; migrations = [ ]; }"
    ),
    "generic, naming the plugin": '{ plugin = "postgresql"; target = "17"; accept = [ "17" ]; }',
}


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_every_spelling_of_a_postgresql_service_gets_the_same_manifest_and_units(spelling):
    config = f"{{ defaults.postgresql = {PG_DEFAULTS}; services.postgresql = {SPELLINGS[spelling]}; }}"
    reference = f"{{ defaults.postgresql = {PG_DEFAULTS}; services.postgresql = {SPELLINGS['generic']}; }}"
    manifest = nix_eval(f"lib.manifest {config}")
    expected = nix_eval(f"lib.manifest {reference}")
    if "naming the plugin" in spelling:
        expected["services"]["postgresql"]["plugin"] = "postgresql"
    assert manifest == expected
    svc = manifest["services"]["postgresql"]
    assert (svc["unit"], svc["user"]) == ("postgresql.service", "postgres")
    assert svc["settings"]["data_dir"] == "/var/lib/postgresql/17"
    units = nix_eval(f'lib.units {{ cfg = {config}; exe = "/bin/nm"; manifestFile = "/etc/m.json"; }}')
    assert units == nix_eval(f'lib.units {{ cfg = {reference}; exe = "/bin/nm"; manifestFile = "/etc/m.json"; }}')
    unit = units["postgresql"]
    assert unit["before"] == ["postgresql.service"] and unit["requiredBy"] == ["postgresql.service"]
    # the generated settings satisfy the plugin's own settings model
    parsed = parse_manifest(json.dumps(manifest), "pg.json", "json")
    model = PluginRegistry.discover().hooks("postgresql").call("settings_model")
    model.model_validate(parsed.services["postgresql"].settings)


def test_explicit_values_win_over_the_plugins_defaults():
    config = (
        f'{{ defaults.postgresql = {PG_DEFAULTS}; services.db = {{ plugin = "postgresql"; target = "17";'
        ' unit = "pg-custom.service"; settings = { data_dir = "/srv/pg"; method = "link"; }; }; }'
    )
    svc = nix_eval(f"lib.manifest {config}")["services"]["db"]
    assert svc["unit"] == "pg-custom.service" and svc["user"] == "postgres"
    assert (svc["settings"]["data_dir"], svc["settings"]["method"]) == ("/srv/pg", "link")
    assert svc["settings"]["packages"]["15"] == "/nix/store/a-postgresql-15"  # the rest still defaulted
    # defaults of another plugin touch nothing
    other = nix_eval(
        f'lib.manifest {{ defaults.postgresql = {PG_DEFAULTS}; services.app = {{ plugin = "scripts";'
        ' target = "2024-01-01"; settings.paths = [ "/d" ]; }; }'
    )
    assert "unit" not in other["services"]["app"] and other["services"]["app"]["settings"] == {"paths": ["/d"]}


def test_an_openldap_service_gets_its_settings_from_services_openldap():
    manifest = nix_eval(
        f"lib.manifest {{ defaults.ldap = {LDAP_DEFAULTS};"
        ' services.openldap = { plugin = "ldap"; target = "2.6"; }; }'
    )
    svc = manifest["services"]["openldap"]
    assert (svc["unit"], svc["user"]) == ("openldap.service", "openldap")
    assert svc["settings"]["config_dir"] == "/etc/openldap/slapd.d"
    assert svc["settings"]["data_dir"] == "/var/lib/openldap/db"
    parsed = parse_manifest(json.dumps(manifest), "ldap.json", "json")
    model = PluginRegistry.discover().hooks("ldap").call("settings_model")
    model.model_validate(parsed.services["openldap"].settings)


MYSQL_DEFAULTS = f"""(import {REPO}/plugins/mysql/nixos-defaults.nix {{
  current = "11.8"; dataDir = "/var/lib/mysql";
  packages = {{ "10.11" = "/nix/store/f-mariadb-server-10.11.18"; "11.8" = "/nix/store/g-mariadb-server-11.8.9"; }};
}})"""


def declared_service(config: str, name: str, unit: str, user: str) -> dict[str, Any]:
    """Service `name` of the manifest `config` makes, checked for the unit and user its
    plugin's defaults give, ordered before that unit, and valid for the plugin's settings model."""
    manifest = nix_eval(f"lib.manifest {config}")
    svc: dict[str, Any] = manifest["services"][name]
    assert (svc["unit"], svc["user"]) == (unit, user)
    units = _units(config, exe="/bin/nm")
    assert units[name]["before"] == [unit] and units[name]["requiredBy"] == [unit]
    parsed = parse_manifest(json.dumps(manifest), f"{name}.json", "json")
    model = PluginRegistry.discover().hooks(str(svc.get("plugin") or name)).call("settings_model")
    model.model_validate(parsed.services[name].settings)
    return svc


@pytest.mark.parametrize(
    "service",
    [
        '{ target = "11.8"; }',  # the generic spelling: the plugin is the service's name
        '{ plugin = "mysql"; target = "11.8"; autoApply = false; accept = [ ]; }',  # what the fragment declares
    ],
)
def test_a_mysql_service_gets_its_settings_and_ordering_from_services_mysql(service):
    config = f"{{ defaults.mysql = {MYSQL_DEFAULTS}; services.mysql = {service}; }}"
    svc = declared_service(config, "mysql", "mysql.service", "mysql")
    assert svc["settings"] == {
        "data_dir": "/var/lib/mysql",
        "config_file": "/etc/my.cnf",
        "packages": {"10.11": "/nix/store/f-mariadb-server-10.11.18", "11.8": "/nix/store/g-mariadb-server-11.8.9"},
    }
    assert "lacks the current series 11.4" in nix_error(
        f'import {REPO}/plugins/mysql/nixos-defaults.nix {{ current = "11.4"; packages = {{ "11.8" = "/p"; }}; }}'
    )


MONGODB_DEFAULTS = f"""(import {REPO}/plugins/mongodb/nixos-defaults.nix {{
  current = "7.0"; dbpath = "/var/db/mongodb";
  packages = {{ "6.0" = "/nix/store/a-mongodb-6.0.19"; "7.0" = "/nix/store/b-mongodb-7.0.14"; }};
}})"""


@pytest.mark.parametrize(
    "service",
    [
        '{ target = "7.0"; }',  # the generic spelling: the plugin is the service's name
        '{ plugin = "mongodb"; target = "7.0"; autoApply = false; accept = [ ]; }',  # what the fragment declares
    ],
)
def test_a_mongodb_service_gets_its_settings_and_ordering_from_services_mongodb(service):
    config = f"{{ defaults.mongodb = {MONGODB_DEFAULTS}; services.mongodb = {service}; }}"
    svc = declared_service(config, "mongodb", "mongodb.service", "mongodb")
    assert svc["settings"] == {
        "db_path": "/var/db/mongodb",
        "packages": {"6.0": "/nix/store/a-mongodb-6.0.19", "7.0": "/nix/store/b-mongodb-7.0.14"},
    }
    member = nix_eval(
        f'import {REPO}/plugins/mongodb/nixos-defaults.nix {{ current = "7.0"; packages = {{ "7.0" = "/p"; }};'
        ' replSetName = "rs0"; user = "mdb"; }'
    )
    assert member["settings"]["replica_set"] == "rs0" and member["user"] == "mdb"
    assert "lacks the current major 8.0" in nix_error(
        f'import {REPO}/plugins/mongodb/nixos-defaults.nix {{ current = "8.0"; packages = {{ "7.0" = "/p"; }}; }}'
    )


def test_a_jupyterhub_service_gets_its_settings_and_ordering_from_services_jupyterhub():
    defaults = (
        f'(import {REPO}/plugins/jupyterhub/nixos-defaults.nix {{ current = "5.5"; stateDirectory = "hub";'
        ' packages = { "4.1" = "/nix/store/a-python3-env"; "5.5" = "/nix/store/b-python3-env"; }; })'
    )
    config = f'{{ defaults.jupyterhub = {defaults}; services.jupyterhub = {{ target = "5.5"; }}; }}'
    svc = declared_service(config, "jupyterhub", "jupyterhub.service", "root")
    assert svc["settings"] == {
        "data_dir": "/var/lib/hub",
        "packages": {"4.1": "/nix/store/a-python3-env", "5.5": "/nix/store/b-python3-env"},
    }
    assert "lacks the current series 6.1" in nix_error(
        f'import {REPO}/plugins/jupyterhub/nixos-defaults.nix {{ current = "6.1"; packages = {{ "5.5" = "/p"; }}; }}'
    )


def test_a_grafana_service_gets_its_settings_and_ordering_from_services_grafana():
    defaults = (
        f'(import {REPO}/plugins/grafana/nixos-defaults.nix {{ current = "11.6"; dataDir = "/srv/grafana";'
        ' secretKey = "$__file{/run/keys/grafana-secret}";'
        ' packages = { "10.4" = "/nix/store/a-grafana-10.4.19"; "11.6" = "/nix/store/b-grafana-11.6.6"; }; })'
    )
    config = f'{{ defaults.grafana = {defaults}; services.grafana = {{ target = "11.6"; }}; }}'
    svc = declared_service(config, "grafana", "grafana.service", "grafana")
    assert svc["settings"] == {
        "data_dir": "/srv/grafana",
        "database_type": "sqlite3",
        "database_path": "/srv/grafana/data/grafana.db",
        "secret_key_file": "/run/keys/grafana-secret",
        "packages": {"10.4": "/nix/store/a-grafana-10.4.19", "11.6": "/nix/store/b-grafana-11.6.6"},
    }
    inline = nix_eval(
        f'import {REPO}/plugins/grafana/nixos-defaults.nix {{ current = "11.6"; packages = {{ "11.6" = "/p"; }};'
        ' secretKey = "not-a-file-reference"; databaseType = "postgres"; }'
    )
    assert "secret_key_file" not in inline["settings"] and inline["settings"]["database_type"] == "postgres"
    assert "lacks the current series 12.0" in nix_error(
        f'import {REPO}/plugins/grafana/nixos-defaults.nix {{ current = "12.0"; packages = {{ "11.6" = "/p"; }}; }}'
    )


GITLAB_DEFAULTS = f"""(import {REPO}/plugins/gitlab/nixos-defaults.nix {{
  current = "17.8"; statePath = "/var/gitlab/state"; databaseHost = ""; databasePasswordFile = "/run/keys/db";
  backupSkip = [ "registry" ]; psql = "/nix/store/p-postgresql-16/bin/psql";
  packages = {{ "17.5" = "/nix/store/a-gitlab-17.5"; "17.8" = "/nix/store/b-gitlab-17.8"; }};
}})"""


def test_a_gitlab_service_gets_its_settings_and_ordering_from_services_gitlab():
    config = f'{{ defaults.gitlab = {GITLAB_DEFAULTS}; services.gitlab = {{ target = "17.8"; after = [ ]; }}; }}'
    svc = declared_service(config, "gitlab", "gitlab-db-config.service", "gitlab")
    assert svc["settings"] == {
        "state_dir": "/var/gitlab/state",
        "database": {"host": "/run/postgresql", "dbname": "gitlab", "user": "gitlab", "password_file": "/run/keys/db"},
        "backup_skip": ["registry"],
        "psql": "/nix/store/p-postgresql-16/bin/psql",
        "packages": {"17.5": "/nix/store/a-gitlab-17.5", "17.8": "/nix/store/b-gitlab-17.8"},
    }
    assert "lacks the current version 18.2" in nix_error(
        f'import {REPO}/plugins/gitlab/nixos-defaults.nix {{ current = "18.2"; packages = {{ "17.8" = "/p"; }}; }}'
    )


def _redis_defaults(name: str, extra: str = "") -> str:
    return f"""(import {REPO}/plugins/redis/nixos-defaults.nix {{
  current = "valkey-8.0"; name = "{name}"; {extra}
  packages = {{ "7.2" = "/nix/store/r-redis-7.2.4"; "valkey-8.0" = "/nix/store/v-valkey-8.0.1"; }};
}})"""


@pytest.mark.parametrize(
    "service",
    [
        '{ plugin = "redis"; target = "valkey-8.0"; }',  # the generic spelling, named after the server's unit
        '{ plugin = "redis"; target = "valkey-8.0"; autoApply = false; accept = [ ]; }',  # what the fragment declares
    ],
)
def test_each_redis_server_gets_its_own_settings_and_ordering_from_services_redis_servers(service):
    cache_defaults = _redis_defaults("cache", "appendOnly = true;")
    plain_defaults = _redis_defaults("", 'user = "kv";')
    defaults = f'{{ "redis/redis-cache" = {cache_defaults}; "redis/redis" = {plain_defaults}; }}'
    config = f'{{ defaults = {defaults}; services."redis-cache" = {service}; services.redis = {service}; }}'
    cache = declared_service(config, "redis-cache", "redis-cache.service", "redis-cache")
    assert cache["settings"] == {
        "data_dir": "/var/lib/redis-cache",
        "appendonly": True,
        "flavour": "valkey",
        "packages": {"7.2": "/nix/store/r-redis-7.2.4", "valkey-8.0": "/nix/store/v-valkey-8.0.1"},
    }
    plain = declared_service(config, "redis", "redis.service", "kv")
    assert plain["settings"]["data_dir"] == "/var/lib/redis" and "appendonly" not in plain["settings"]
    assert "lacks the current series 8.0" in nix_error(
        f'import {REPO}/plugins/redis/nixos-defaults.nix {{ current = "8.0"; packages = {{ "7.2" = "/p"; }}; }}'
    )


def test_the_module_imports_every_plugins_fragment():
    """nixos/module.nix names no plugin: it imports plugins/*/nixos.nix, found by lib.fragments
    (nixpkgs is not here to evaluate the module itself)."""
    module = (REPO / "nixos" / "module.nix").read_text()
    assert "services.postgresql" not in module and "services.openldap" not in module
    assert "imports = fragments;" in module and "fragments = pure.fragments ../plugins;" in module
    found = nix_eval(f"map toString (lib.fragments {REPO}/plugins)")
    assert sorted(Path(f).parent.name for f in found) == [
        "gitlab",
        "grafana",
        "jupyterhub",
        "ldap",
        "mongodb",
        "mysql",
        "postgresql",
        "redis",
    ]


def test_null_option_values_are_left_out_as_the_module_passes_them():
    data = nix_eval(
        'lib.manifest { stateDir = "/var/lib/nixos-migrate"; backupDir = null; services.app = {'
        ' enable = true; plugin = null; target = "2024-01-01"; unit = null; user = null; accept = [ ];'
        ' after = [ ]; settings = { }; autoApply = false; migrations = [ { version = "2024-01-01";'
        ' up = { script = "x"; warn = null; backup = null; restore = null; };'
        " down = { script = null; warn = null; backup = null; restore = null; }; } ]; }; }"
    )
    assert "null" not in json.dumps(data)
    assert data["services"]["app"]["migrations"][0] == {"version": "2024-01-01", "up": {"script": "x"}, "down": {}}
    parse_manifest(json.dumps(data), "nulls.json", "json")


def test_the_convenience_options_every_plugin_shares():
    """nixos/convenience.nix, with a stand-in for nixpkgs' lib that shows what it declares."""
    options = nix_eval(
        f'import {REPO}/nixos/convenience.nix {{ mkOption = o: o; types = {{ listOf = t: "list of ${{t}}";'
        ' package = "package"; str = "string"; bool = "bool"; }; }'
        ' { service = "PostgreSQL"; unit = "postgresql.service"; versions = "majors"; }'
    )
    assert sorted(options) == ["accept", "autoApply", "previousPackages"]
    assert (options["autoApply"]["type"], options["autoApply"]["default"]) == ("bool", False)
    assert options["previousPackages"]["type"] == "list of package" and options["accept"]["default"] == []
    assert "postgresql.service" in options["autoApply"]["description"]
    for fragment in ("postgresql", "ldap", "mysql", "gitlab", "redis", "mongodb", "jupyterhub", "grafana"):
        assert "import ../../nixos/convenience.nix lib" in (REPO / "plugins" / fragment / "nixos.nix").read_text()
