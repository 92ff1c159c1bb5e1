"""RFC 155 form: `backup`/`restore` written once under `up` serve the migration's `down` too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nixos_migrate.fingerprint import tree_digest
from nixos_migrate.testing.cli import run_cli
from nixos_migrate.testing.manifests import ManifestBuilder

V1, V2, V3 = "2024-01-01", "2024-02-01", "2024-03-01"


def _migrations(data: Path, saves: Path) -> list[dict[str, Any]]:
    # the backup script logs the step it saves for, so the test sees which steps took one
    backup = f'cp -a "{data}/." "$BACKUP/"\necho "$NIXOS_MIGRATE_DIRECTION $NIXOS_MIGRATE_TO" >> "{saves}"'
    restore = f'find "{data}" -mindepth 1 -delete\ncp -a "$BACKUP/." "{data}/"'
    return [
        {"version": V1, "up": {"script": f'echo "1,Zoë" > "{data}/rows"', "backup": backup, "restore": restore}},
        {
            "version": V2,
            "up": {"script": f'echo "2,Łukasz" >> "{data}/rows"', "backup": backup, "restore": restore},
            "down": {"script": f'sed -i "/Łukasz/d" "{data}/rows"'},
        },
        {
            "version": V3,
            "up": {"script": f'gzip "{data}/rows"', "backup": backup, "restore": restore},
            "down": {"script": f'gunzip "{data}/rows.gz"'},
        },
    ]


def _cli(root: Path, data: Path, saves: Path, target: str, *args: str, env: dict[str, str] | None = None) -> Any:
    builder = ManifestBuilder(root)
    # no settings.paths: the scripts are the only way to back this service up
    builder.service("app", plugin="scripts", target=target, settings={}, migrations=_migrations(data, saves))
    return run_cli(builder.write(), *args, env=env)


def test_down_steps_back_up_and_restore_with_their_migrations_up_scripts(tmp_path: Path) -> None:
    data, saves = tmp_path / "data", tmp_path / "saves.log"
    data.mkdir()
    assert _cli(tmp_path, data, saves, V3, "up").code == 0
    at_v3 = tree_digest(data)

    plan = _cli(tmp_path, data, saves, V1, "plan", "--json")
    assert plan.code == 0, plan.output
    checks = [c["name"] for c in plan.json[0]["checks"]]
    assert "something to back up" not in checks and "backup script parses" in checks

    # a failure at the end of the first down step: its backup (by V3's up script) is restored
    failed = _cli(tmp_path, data, saves, V1, "down", "app", "--to", V1, env={"NIXOS_MIGRATE_FAULT": "apply@app"})
    assert failed.code == 1, failed.output
    assert tree_digest(data) == at_v3
    assert saves.read_text().splitlines()[-1] == f"down {V2}"

    done = _cli(tmp_path, data, saves, V1, "down", "app", "--to", V1, "--json")
    assert done.code == 0, done.output
    assert (data / "rows").read_text() == "1,Zoë\n"
    assert saves.read_text().splitlines()[-2:] == [f"down {V2}", f"down {V1}"]
    backups = _cli(tmp_path, data, saves, V1, "backups", "--json").json
    assert [b["kind"] for b in backups if b["direction"] == "down"] == ["script", "script", "script"]


def test_a_down_step_with_no_backup_anywhere_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    builder = ManifestBuilder(tmp_path)
    migrations = [
        {"version": V1, "up": {"script": f'echo 1 > "{data}/rows"'}},
        {"version": V2, "up": {"script": f'echo 2 >> "{data}/rows"'}, "down": {"script": f'sed -i /2/d "{data}/rows"'}},
    ]
    builder.service("app", plugin="scripts", target=V2, settings={}, migrations=migrations)
    manifest = builder.write()
    up = run_cli(manifest, "up")
    assert up.code == 3 and "something to back up" in up.output, up.output  # refused, nothing ran
    assert not (data / "rows").exists()
