"""`nixos-migrate`: parse the command line, call the engine, render the result."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import click

from nixos_migrate import __version__
from nixos_migrate.errors import ChecksFailed, MigrateError, StepsPending, UsageError
from nixos_migrate.lazy import lazy_module

# the engine, the manifest's models, the plugins and rich are imported by the commands that use
# them: `--help` and a command's usage errors need none of them
if TYPE_CHECKING:
    from nixos_migrate import executor, render, scaffold
    from nixos_migrate import manifest as manifests
    from nixos_migrate import plugins as registry
else:
    executor = lazy_module("nixos_migrate.executor")
    manifests = lazy_module("nixos_migrate.manifest")
    registry = lazy_module("nixos_migrate.plugins")
    render = lazy_module("nixos_migrate.render")
    scaffold = lazy_module("nixos_migrate.scaffold")

JSON = click.option("--json", "json_output", is_flag=True, help="Print machine-readable JSON on stdout.")
ACCEPT = click.option(
    "--accept",
    "accept",
    multiple=True,
    metavar="VERSION",
    help="Accept the warning or irreversibility of the step to VERSION (repeatable).",
)
DATA_LOSS = click.option(
    "--accept-data-loss",
    is_flag=True,
    help="Allow steps that restore an older backup: data written since is lost (it is backed up first).",
)
DEFER_SETTLE = click.option(
    "--defer-settle",
    is_flag=True,
    help="Leave the work that needs no downtime (PostgreSQL: planner statistics) to `nixos-migrate settle`,"
    " to run once the service runs again (default: done at once when the manifest names no unit).",
)


class Interrupted(BaseException):
    """SIGTERM/SIGINT while a step runs: unwinds through the step so that its backup is restored."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


class Context:
    def __init__(self, manifest: Path | None, traceback: bool) -> None:
        self.manifest_option = manifest
        self.traceback = traceback

    @contextmanager
    def engine(
        self, json_output: bool = False, defer_settle: bool = False, progress: bool = True
    ) -> Iterator[executor.Engine]:
        path = manifests.manifest_path(self.manifest_option)
        manifest = manifests.load_manifest(path)
        engine = executor.Engine(
            manifest,
            registry.PluginRegistry.discover(),
            source=str(path),
            progress=render.progress_for(json_output or not progress),
            command=" ".join(["nixos-migrate", *sys.argv[1:]]),
        )
        engine.defer_settle = defer_settle
        try:
            yield engine
        finally:
            engine.close()


class BackupsGroup(click.Group):
    """`backups [SVC]` lists, `backups prune SVC --keep N` prunes."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


class CommandsGroup(click.Group):
    """The core's subcommands, and those plugins add through the entry-point group
    `nixos_migrate.commands` (hookspecs.py), imported only when one of them runs or is listed."""

    def _contributed(self) -> dict[str, Any]:
        from importlib.metadata import entry_points

        from nixos_migrate.hookspecs import COMMANDS_GROUP

        return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._contributed()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        ep = self._contributed().get(cmd_name)
        if ep is None:
            return None
        try:
            command = ep.load()
        except Exception as exc:
            dist = ep.dist.name if ep.dist else "?"
            raise UsageError(
                f"the command {cmd_name!r} of {dist} could not be loaded: {type(exc).__name__}: {exc}",
                hint="run `nixos-migrate plugins` to see which plugins loaded",
            ) from exc
        if not isinstance(command, click.Command):
            raise UsageError(f"the entry point of command {cmd_name!r} is no click command: {ep.value}")
        return command


@click.group(cls=CommandsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-m",
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Manifest (JSON, or TOML by suffix). Default: $NIXOS_MIGRATE_MANIFEST, else /etc/nixos-migrate/manifest.json.",
)
@click.option("--traceback", is_flag=True, help="Show the Python traceback of a failure.")
@click.version_option(__version__, prog_name="nixos-migrate")
@click.pass_context
def cli(ctx: click.Context, manifest: Path | None, traceback: bool) -> None:
    """Move the data of stateful services to the version the configuration asks for.

    Every step is backed up first, journalled, verified, and restored automatically when it
    fails. Exit codes: 0 done or nothing to do; 1 a step failed and the data was restored;
    2 bad usage or manifest; 3 refused (acceptance needed, journal dirty, lock held, pre-check
    failed); 4 a step failed and the restore failed too.
    """
    ctx.obj = Context(manifest, traceback)


@cli.command()
@click.argument("services", nargs=-1)
@JSON
@click.pass_obj
def status(obj: Context, services: tuple[str, ...], json_output: bool) -> None:
    """Data version, target, pending steps, dirty state and lock holder per service."""
    # nothing it does is long: no progress display to set up (rich's console for stderr)
    with obj.engine(json_output, progress=False) as engine:
        rows = engine.status(services)
    if json_output:
        render.emit_json(rows)
        return
    render.table(
        None,
        ["service", "plugin", "data", "journal", "target", "pending", "state"],
        [
            (
                r["service"],
                r["plugin"],
                r["data_version"],
                r["recorded"],
                r["target"],
                len(r["pending"]),
                r["error"]
                or (f"locked by pid {r['lock_holder'].get('pid')}" if r["lock_holder"] else None)
                or (f"DIRTY: {r['dirty']['step']} in {r['dirty']['phase']}" if r["dirty"] else "ok"),
            )
            for r in rows
        ],
    )


@cli.command()
@click.argument("services", nargs=-1)
@ACCEPT
@DATA_LOSS
@click.option("--no-checks", is_flag=True, help="Skip the plugins' pre-checks and the free-space check.")
@click.option(
    "--fail-if-pending",
    is_flag=True,
    help="Exit 3 when a step is pending, naming the command that runs it (the NixOS unit's gate).",
)
@JSON
@click.pass_obj
def plan(
    obj: Context,
    services: tuple[str, ...],
    accept: tuple[str, ...],
    accept_data_loss: bool,
    no_checks: bool,
    fail_if_pending: bool,
    json_output: bool,
) -> None:
    """Show the steps `up` would run, and what must be accepted. Changes nothing.

    Exits 3 when `up` would refuse (for the NixOS pre-switch check), or with --fail-if-pending
    when anything is pending.
    """
    with obj.engine(json_output) as engine:
        plans = engine.plan(services, accept=accept, accept_data_loss=accept_data_loss, run_checks=not no_checks)
    if json_output:
        render.emit_json([p.to_json() for p in plans])
    else:
        for p in plans:
            render.show_plan(p)
    refused = [p for p in plans if p.refusals]
    if refused:
        refused[0].raise_refusals()
    pending = [p for p in plans if p.steps]
    if fail_if_pending and pending:
        names = " ".join(p.name for p in pending)
        steps = "; ".join(f"{p.name}: {', '.join(s.label for s in p.steps)}" for p in pending)
        raise StepsPending(
            f"the data is not at its target version yet ({steps}); its service stays stopped",
            hint=f"run `nixos-migrate up {names}` (or set autoApply in the NixOS configuration)",
        )


def _report(reports: Sequence[executor.RunReport], json_output: bool) -> None:
    if json_output:
        render.emit_json([r.to_json() for r in reports])
        return
    for r in reports:
        if not r.steps:
            render.out.print(f"{r.service}: at {r.end_version or '(no data)'}, nothing to do")
            continue
        for s in r.steps:
            backup = f" (backup {s.backup_id})" if s.backup_id else ""
            render.out.print(f"{r.service}: {s.step.label} {s.outcome}{backup}")
        render.out.print(f"{r.service}: now at {r.end_version}")
        if r.settled is not None:
            _report_settled(r.service, r.settled)


def _report_settled(service: str, settled: executor.Settled) -> None:
    for c in settled.checks:
        render.out.print(f"{service}: {c.name}: {'ok' if c.ok else 'FAILED'}{f' ({c.detail})' if c.detail else ''}")
    if settled.state == "deferred":
        render.out.print(f"{service}: once it runs again: `nixos-migrate settle {service}` (e.g. planner statistics)")
    elif settled.state == "failed":
        render.err.print(
            f"WARNING: {service}: the work after the step failed; the data is migrated and verified."
            f" Run `nixos-migrate settle {service}` again.",
            markup=False,
        )


@cli.command()
@click.argument("services", nargs=-1)
@ACCEPT
@DATA_LOSS
@click.option("--resume", is_flag=True, help="Finish a step a crash interrupted, then go on.")
@click.option("--rollback", is_flag=True, help="Restore the backup of a step a crash interrupted, and stop.")
@DEFER_SETTLE
@JSON
@click.pass_obj
def up(
    obj: Context,
    services: tuple[str, ...],
    accept: tuple[str, ...],
    accept_data_loss: bool,
    resume: bool,
    rollback: bool,
    defer_settle: bool,
    json_output: bool,
) -> None:
    """Migrate the data of SERVICES (default: all) to their targets."""
    if resume and rollback:
        raise UsageError("--resume and --rollback exclude each other")
    with obj.engine(json_output, defer_settle) as engine:
        reports = engine.up(
            services, accept=accept, accept_data_loss=accept_data_loss, resume=resume, rollback=rollback
        )
    _report(reports, json_output)


@cli.command()
@click.argument("service")
@click.option("--to", "to", required=True, metavar="VERSION", help="A version the data has been at.")
@ACCEPT
@DATA_LOSS
@DEFER_SETTLE
@JSON
@click.pass_obj
def down(
    obj: Context,
    service: str,
    to: str,
    accept: tuple[str, ...],
    accept_data_loss: bool,
    defer_settle: bool,
    json_output: bool,
) -> None:
    """Migrate the data of SERVICE back to version VERSION."""
    with obj.engine(json_output, defer_settle) as engine:
        report = engine.down(service, to, accept=accept, accept_data_loss=accept_data_loss)
    _report([report], json_output)


@cli.command()
@click.argument("services", nargs=-1)
@JSON
@click.pass_obj
def settle(obj: Context, services: tuple[str, ...], json_output: bool) -> None:
    """Do the work earlier steps left for after SERVICES (default: all) run again.

    PostgreSQL computes planner statistics here, through the running server (or on the data when
    it is stopped). The NixOS module runs this after the service starts. Exits 1 when it failed.
    """
    with obj.engine(json_output) as engine:
        results = engine.settle(services)
    if json_output:
        render.emit_json({name: settled.to_json() for name, settled in results.items()})
    else:
        for name, settled in results.items():
            if settled.state == "nothing":
                render.out.print(f"{name}: nothing left to do")
            else:
                render.checks_table(name, settled.checks)
    bad = [f"{n}: {c.name}" for n, s in results.items() for c in s.checks if not c.ok]
    if bad:
        raise ChecksFailed(f"settle failed: {', '.join(bad)}", hint="the service's logs; then run it again")


@cli.command()
@click.argument("services", nargs=-1)
@JSON
@click.pass_obj
def verify(obj: Context, services: tuple[str, ...], json_output: bool) -> None:
    """Run the plugins' health checks now. Exits 1 when a check fails."""
    with obj.engine(json_output) as engine:
        results = engine.verify(services)
    if json_output:
        render.emit_json(
            {n: [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in cs] for n, cs in results.items()}
        )
    else:
        for name, checks in results.items():
            render.checks_table(name, checks)
    bad = [f"{n}: {c.name}" for n, cs in results.items() for c in cs if not c.ok]
    if bad:
        raise ChecksFailed(f"verify failed: {', '.join(bad)}", hint="`nixos-migrate history` and the service's logs")


@cli.command()
@click.argument("service")
@JSON
@click.pass_obj
def history(obj: Context, service: str, json_output: bool) -> None:
    """Every step the journal recorded for SERVICE."""
    with obj.engine(json_output) as engine:
        [name] = engine.names([service])
        rows = engine.journal.history(name)
    if json_output:
        render.emit_json(rows)
        return
    render.table(
        service,
        ["step", "from", "to", "dir", "started", "finished", "outcome", "backup", "error"],
        [
            (
                r["id"],
                r["from_version"],
                r["to_version"],
                r["direction"],
                r["started"],
                r["finished"],
                r["outcome"] or f"IN FLIGHT ({r['phase']})",
                r["backup_id"],
                r["error"],
            )
            for r in rows
        ],
    )


@cli.group(cls=BackupsGroup)
def backups() -> None:
    """List backups (`backups [SVC]`) or prune them (`backups prune SVC --keep N`)."""


@backups.command("list")
@click.argument("service", required=False)
@JSON
@click.pass_obj
def backups_list(obj: Context, service: str | None, json_output: bool) -> None:
    """List the backups of SERVICE (default: all)."""
    with obj.engine(json_output) as engine:
        if service:
            engine.names([service])
        records = engine.journal.backups(service)
    if json_output:
        render.emit_json([r.to_json() for r in records])
        return
    render.table(
        None,
        ["id", "service", "before step", "kind", "size", "created", "path"],
        [(r.id, r.service, r.step.label, r.kind, r.size, r.created, r.path) for r in records],
    )


@backups.command("prune")
@click.argument("service")
@click.option("--keep", type=int, required=True, help="How many of the newest backups to keep.")
@JSON
@click.pass_obj
def backups_prune(obj: Context, service: str, keep: int, json_output: bool) -> None:
    """Delete all but the newest N backups of SERVICE (the only way backups are deleted)."""
    with obj.engine(json_output) as engine:
        removed = engine.prune(service, keep)
    if json_output:
        render.emit_json([r.to_json() for r in removed])
    else:
        render.out.print(f"{service}: removed {len(removed)} backup(s)")


@cli.command()
@click.argument("service")
@click.argument("backup_id", type=int)
@DATA_LOSS
@JSON
@click.pass_obj
def restore(obj: Context, service: str, backup_id: int, accept_data_loss: bool, json_output: bool) -> None:
    """Put SERVICE's data back as in backup BACKUP_ID (the current data is backed up first)."""
    with obj.engine(json_output) as engine:
        report = engine.restore(service, backup_id, accept_data_loss=accept_data_loss)
    _report([report], json_output)


@cli.command()
@JSON
def plugins(json_output: bool) -> None:
    """Installed plugins, their versions and hooks, and plugins that failed to load."""
    found = registry.PluginRegistry.discover()
    data: dict[str, Any] = {
        "loaded": [vars(p) | {"hooks": list(p.hooks)} for p in found.loaded.values()],
        "failed": [{"name": f.name, "distribution": f.distribution, "error": f.error} for f in found.failures.values()],
    }
    if json_output:
        render.emit_json(data)
        return
    render.table(
        "plugins",
        ["name", "distribution", "version", "hooks"],
        [(p.name, p.distribution, p.version, ", ".join(p.hooks)) for p in found.loaded.values()],
    )
    if found.failures:
        render.table(
            "failed to load",
            ["name", "distribution", "error"],
            [(f.name, f.distribution, f.error) for f in found.failures.values()],
        )


@cli.command("new-plugin")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to write it (default: ./nixos-migrate-NAME); must not exist or be empty.",
)
@JSON
def new_plugin_command(name: str, directory: Path | None, json_output: bool) -> None:
    """Write a new plugin distribution NAME: entry point, every hook, conformance tests."""
    target, written = scaffold.new_plugin(name, directory)
    if json_output:
        render.emit_json({"directory": str(target), "files": [str(p) for p in written]})
        return
    render.out.print(f"wrote plugin {name!r} into {target}:")
    for path in written:
        render.out.print(f"  {path}")
    render.out.print(
        f"next: pip install -e '{target}[test]' && pytest {target}/tests  (docs/writing-a-plugin.md)", markup=False
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the CLI and map errors to `FAILED: …` and the exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in args
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupt)
    try:
        code = cli.main(args=args, prog_name="nixos-migrate", standalone_mode=False)
    except MigrateError as exc:
        if show_traceback:
            traceback.print_exc()
        render.err.print(f"FAILED: {exc.message}", markup=False)
        if exc.hint:
            render.err.print(f"next: {exc.hint}", markup=False)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        return 2
    except Interrupted as exc:
        render.err.print(f"FAILED: interrupted by {exc}", markup=False)
        return 1
    except Exception as exc:
        if show_traceback:
            traceback.print_exc()
        render.err.print(f"FAILED: internal error: {type(exc).__name__}: {exc}", markup=False)
        render.err.print("next: run again with --traceback and report it", markup=False)
        return 1
    return code if isinstance(code, int) else 0


def run() -> NoReturn:
    """The `nixos-migrate` command: `main`, then an exit that skips tearing the interpreter down
    (freeing every module takes 0.1 s with psycopg and pydantic loaded, on every invocation).
    Everything `main` opened is closed by then; what is buffered is flushed here. Under a profiler
    or a coverage tracer, which write their results at exit, the exit is the usual one."""
    code = main()
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away, a closed stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
