"""The contract of every hook, exercised in-process through the engine with a recording plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nixos_migrate.errors import (
    JournalDirty,
    ManifestError,
    NeedsAcceptance,
    PluginError,
    PrecheckFailed,
    RestoreFailed,
    StepFailed,
    VersionMismatch,
)
from nixos_migrate.executor import Engine
from nixos_migrate.fingerprint import tree_digest
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.journal import Journal
from nixos_migrate.manifest import parse_manifest
from nixos_migrate.model import Check, Step
from nixos_migrate.plugins import PluginRegistry
from tests.recording_plugin import RecordingPlugin


class Rig:
    def __init__(self, root: Path, plugin: RecordingPlugin, target: str = "2", **spec: object) -> None:
        self.root = root
        self.data = root / "data"
        self.plugin = plugin
        self.spec = {"plugin": "rec", "target": target, "settings": {"data_dir": str(self.data)}, **spec}

    def engine(self, **override: object) -> Engine:
        doc = {
            "state_dir": str(self.root / "state"),
            "services": {"svc": {**self.spec, **override}},
        }
        manifest = parse_manifest(json.dumps(doc), "test.json", "json")
        registry = PluginRegistry()
        registry.register("rec", self.plugin)
        return Engine(manifest, registry, source="test.json", command="test")

    def seed(self, version: str) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "VERSION").write_text(version)
        (self.data / "payload").write_bytes(b"\x00\x01payload" * 100)

    def digest(self) -> str:
        return tree_digest(self.data)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    r = Rig(tmp_path, RecordingPlugin())
    r.seed("1")
    return r


def test_hook_settings_model_validates_at_load(rig):
    with pytest.raises(ManifestError, match=r"test.json: services.svc.settings.data_dir: Field required"):
        rig.engine(settings={}).plan(None)
    with pytest.raises(ManifestError, match=r"services.svc.settings.max_version: Input should be a valid integer"):
        rig.engine(settings={"data_dir": str(rig.data), "max_version": "x"}).plan(None)
    engine = rig.engine()
    assert engine.service("svc").settings.data_dir == rig.data


def test_hook_settings_model_must_return_a_model(tmp_path):
    class Bad:
        @hookimpl
        def settings_model(self):
            return dict

    registry = PluginRegistry()
    registry.register("bad", Bad())
    doc = {"state_dir": str(tmp_path / "s"), "services": {"x": {"plugin": "bad", "target": "1"}}}
    manifest = parse_manifest(json.dumps(doc), "t.json", "json")
    with pytest.raises(PluginError, match="settings_model must return a pydantic model class"):
        Engine(manifest, registry).service("x")


def test_hook_detect_version_reads_the_data_and_mismatch_refuses(rig):
    engine = rig.engine()
    [plan] = engine.plan(None)
    assert plan.current == "1"
    engine.up(None)
    assert engine.journal.version("svc") == "2"
    (rig.data / "VERSION").write_text("7")  # something else changed the data
    with pytest.raises(VersionMismatch, match="data is at version 7 but the journal recorded 2"):
        rig.engine(target="3").up(None)


def test_hook_detect_version_none_means_no_data(tmp_path):
    rig = Rig(tmp_path, RecordingPlugin())
    engine = rig.engine()
    [plan] = engine.plan(None)
    assert plan.current is None
    assert [s.from_version for s in plan.steps] == [None, "1"]


def test_hook_init_creates_data_before_planning(tmp_path):
    rig = Rig(tmp_path, RecordingPlugin(creates="1"), target="3")
    engine = rig.engine()
    [plan] = engine.plan(None)
    assert plan.will_init
    [report] = engine.up(None)
    assert rig.plugin.called("init") == [None]
    assert report.start_version == "1"
    assert [s.step.to_version for s in report.steps] == ["2", "3"]
    assert (rig.data / "VERSION").read_text() == "3"


def test_hook_plan_must_chain(rig):
    rig.plugin.returns["plan"] = [Step("5", "6")]
    with pytest.raises(PluginError, match="does not chain from '1'"):
        rig.engine().plan(None)
    rig.plugin.returns["plan"] = [Step("1", "4")]
    with pytest.raises(PluginError, match="ending at '4', not '2'"):
        rig.engine().plan(None)
    rig.plugin.returns["plan"] = None
    with pytest.raises(PluginError, match="does not implement `plan`"):
        rig.engine().plan(None)


def test_hook_plan_warnings_need_acceptance(rig):
    rig.plugin.returns["plan"] = [Step("1", "2", warning="reindexes everything")]
    before = rig.digest()
    with pytest.raises(NeedsAcceptance, match="reindexes everything"):
        rig.engine().up(None)
    assert rig.digest() == before
    assert rig.plugin.called("backup") == []
    rig.engine().up(None, accept=["2"])
    assert (rig.data / "VERSION").read_text() == "2"


def test_hook_plan_irreversible_steps_need_acceptance(rig):
    rig.plugin.returns["plan"] = [Step("1", "2", irreversible=True)]
    with pytest.raises(NeedsAcceptance, match="irreversible"):
        rig.engine().up(None)
    rig.engine(accept=["2"]).up(None)
    assert (rig.data / "VERSION").read_text() == "2"


def test_hook_check_failure_refuses_before_anything_changes(rig):
    rig.plugin.checks_fail = True
    before = rig.digest()
    with pytest.raises(PrecheckFailed, match="pre-check always failed: injected"):
        rig.engine(target="3").up(None)
    # checks ran for every step of the plan, nothing else did
    assert [s.to_version for s in rig.plugin.called("check")] == ["2", "3"]
    assert rig.plugin.called("backup") == []
    assert rig.digest() == before


def test_hook_backup_size_is_summed_and_checked_against_free_space(rig):
    rig.plugin.estimate = 1 << 60
    with pytest.raises(PrecheckFailed, match="bytes free; the backups need"):
        rig.engine(target="3").up(None)
    rig.plugin.estimate = 1000
    [plan] = rig.engine(target="3").plan(None)
    assert plan.backup_bytes == 2000


def test_hook_backup_gets_an_empty_private_dest_and_is_recorded(rig):
    engine = rig.engine()
    engine.up(None)
    [(step, dest, contents, mode)] = rig.plugin.called("backup")
    assert step == Step("1", "2")
    assert contents == []
    assert mode == "0o700"
    [record] = engine.journal.backups("svc")
    assert record.path == dest
    assert record.kind == "copy"
    assert record.checksum


def test_hook_backup_failure_leaves_data_untouched(rig):
    before = rig.digest()
    rig.plugin.returns["backup"] = None
    with pytest.raises(StepFailed, match="the data was not touched"):
        rig.engine().up(None)
    assert rig.plugin.called("up") == []
    assert rig.digest() == before
    rig.plugin.returns.clear()
    rig.plugin.fail.add("backup")
    with pytest.raises(StepFailed, match="injected failure in backup"):
        rig.engine().up(None)
    assert rig.digest() == before
    assert rig.engine().journal.backups("svc") == []


def test_hook_up_not_performed_restores(rig):
    before = rig.digest()
    rig.plugin.returns["up"] = None  # writes half-done work, then says it did not perform
    with pytest.raises(StepFailed, match="did not perform up"):
        rig.engine().up(None)
    assert rig.digest() == before
    assert len(rig.plugin.called("restore")) == 1


def test_hook_up_exception_restores(rig):
    before = rig.digest()
    rig.plugin.fail.add("up")
    with pytest.raises(StepFailed, match="RuntimeError: injected failure in up"):
        rig.engine().up(None)
    assert rig.digest() == before


def test_hook_down_and_via_backup(rig):
    engine = rig.engine(target="3")
    engine.up(None)
    # 3 -> 2 goes through the backup taken before 2 -> 3 (via_backup), 2 -> 1 through `down`
    backups = {(b.step.from_version, b.step.to_version): b for b in engine.journal.backups("svc")}
    with pytest.raises(NeedsAcceptance, match="data written since then is lost"):
        rig.engine(target="3").down("svc", "1")
    report = rig.engine(target="3").down("svc", "1", accept_data_loss=True)
    assert [s.step.to_version for s in report.steps] == ["2", "1"]
    assert [s.to_version for s in rig.plugin.called("down")] == ["1"]
    [restored] = rig.plugin.called("restore")
    assert restored.id == backups[("2", "3")].id
    assert (rig.data / "VERSION").read_text() == "1"


def test_hook_down_failure_restores_the_backup_before_down(rig):
    rig.engine().up(None)
    before = rig.digest()
    rig.plugin.fail.add("down")
    with pytest.raises(StepFailed, match="injected failure in down"):
        rig.engine().down("svc", "1")
    assert rig.digest() == before


def test_hook_restore_failure_is_exit_4_and_dirty(rig):
    rig.plugin.fail.add("up")
    rig.plugin.returns["restore"] = None
    with pytest.raises(RestoreFailed) as info:
        rig.engine().up(None)
    assert info.value.exit_code == 4
    journal = Journal.open(rig.root / "state")
    flight = journal.in_flight("svc")
    assert flight is not None and flight.phase == "restore"


def test_hook_verify_failure_restores(rig):
    before = rig.digest()
    rig.plugin.bad_verifies = 1  # the step's verify fails, the verify after the restore passes
    with pytest.raises(StepFailed, match="row count differs"):
        rig.engine().up(None)
    assert rig.digest() == before
    assert len(rig.plugin.called("verify")) == 2


def test_hook_verify_also_judges_the_restore(rig):
    rig.plugin.returns["verify"] = [Check("tables", False, "row count differs")]
    with pytest.raises(RestoreFailed, match="verify after restore failed"):
        rig.engine().up(None)


def test_hooks_are_called_only_on_the_serving_plugin(tmp_path):
    a, b = RecordingPlugin(), RecordingPlugin()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "VERSION").write_text("1")
    manifest = parse_manifest(
        json.dumps(
            {
                "state_dir": str(tmp_path / "state"),
                "services": {
                    "one": {"plugin": "a", "target": "2", "settings": {"data_dir": str(tmp_path / "a")}},
                    "two": {"plugin": "b", "target": "1", "settings": {"data_dir": str(tmp_path / "b")}},
                },
            }
        ),
        "t.json",
        "json",
    )
    registry = PluginRegistry()
    registry.register("a", a)
    registry.register("b", b)
    Engine(manifest, registry).up(["one"])
    assert a.called("up")
    assert b.calls == []


def test_hook_settle_runs_after_the_run_when_no_unit_starts_the_service(rig):
    """Without a unit nothing else would start the service: the core settles at once, after the
    steps are committed, with no step in the context; the report carries what was done."""
    [report] = rig.engine().up(None)
    assert rig.plugin.called("settle") == [None]  # service.step is None
    calls = [name for name, _ in rig.plugin.calls]
    assert calls.index("settle") > max(i for i, n in enumerate(calls) if n == "verify")
    assert report.settled is not None and report.settled.state == "done"
    assert report.to_json()["settle"] == {
        "state": "done",
        "checks": [{"name": "after-start work", "ok": True, "detail": "for 2"}],
    }
    [again] = rig.engine(target="2").up(None)  # nothing to do: no run, no settle
    assert again.settled is None and len(rig.plugin.called("settle")) == 1


def test_hook_settle_deferred_then_called_by_the_settle_command(rig):
    engine = rig.engine()
    engine.defer_settle = True
    [report] = engine.up(None)
    assert report.settled is not None and report.settled.state == "deferred"
    assert rig.plugin.called("settle") == []
    results = rig.engine().settle(None)
    assert results["svc"].state == "done" and results["svc"].checks[0].detail == "for 2"
    assert rig.engine().settle(None)["svc"].state == "nothing"  # done work is no longer noted


def test_hook_settle_is_deferred_when_the_unit_was_not_started_by_the_core(rig):
    """A unit that was not running (the NixOS module's migration unit runs before the service's
    own): the service starts later, so the work waits for `nixos-migrate settle`."""
    [report] = rig.engine(unit="svc-that-was-not-running.service").up(None)
    assert report.settled is not None and report.settled.state == "deferred"
    assert rig.plugin.called("settle") == []


def test_hook_settle_failure_keeps_the_committed_step_and_is_reported(rig):
    rig.plugin.fail.add("settle")
    before_restores = len(rig.plugin.called("restore"))
    [report] = rig.engine().up(None)
    assert report.end_version == "2" and (rig.data / "VERSION").read_text() == "2"
    assert report.settled is not None and report.settled.state == "failed"
    assert "injected failure in settle" in report.settled.checks[0].detail
    assert len(rig.plugin.called("restore")) == before_restores  # never restored for it
    rig.plugin.fail.clear()
    assert rig.engine().settle(None)["svc"].state == "done"  # the work stayed noted


def test_hook_settle_refuses_while_a_step_is_in_flight(rig):
    engine = rig.engine()
    run = engine.journal.start_run("svc", "test", None)
    engine.journal.begin_step(run, "svc", Step("1", "2", "up"))
    with pytest.raises(JournalDirty):
        rig.engine().settle(None)
    assert rig.plugin.called("settle") == []
