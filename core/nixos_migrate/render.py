"""Rendering results for people (rich tables, progress bars) and machines (`--json`)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from nixos_migrate.model import Check
from nixos_migrate.progress import LineProgress, NullProgress, Progress, Task

if TYPE_CHECKING:
    import rich.progress
    from rich.console import Console

    from nixos_migrate.planner import ServicePlan

# piped output (logs, the journal of systemd) is not wrapped to a pretend 80-column terminal
_PIPE_WIDTH = 200


class _Console:
    """A rich Console made at its first use: `--json` output and the JSON of read commands never
    import rich (0.05 s of every such command's start). What is not wrapped here is the real
    Console's (`real()`)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            width = None if stream.isatty() else _PIPE_WIDTH
            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True, width=width)
        return self._console

    def print(self, *objects: Any, **options: Any) -> None:
        self.real().print(*objects, **options)

    @property
    def is_terminal(self) -> bool:
        return self.real().is_terminal

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


out = _Console(stderr=False)
err = _Console(stderr=True)


class _RichTask:
    def __init__(self, bar: rich.progress.Progress, task_id: rich.progress.TaskID) -> None:
        self._bar, self._id = bar, task_id

    def advance(self, amount: float = 1) -> None:
        self._bar.advance(self._id, amount)

    def set_total(self, total: float | None) -> None:
        self._bar.update(self._id, total=total)


class RichProgress:
    """Progress bars on the terminal; finished tasks stay as a line with their duration."""

    def __init__(self) -> None:
        import rich.progress

        self._bar = rich.progress.Progress(
            rich.progress.SpinnerColumn(finished_text="[green]✓"),
            rich.progress.TextColumn("{task.description}"),
            rich.progress.BarColumn(),
            rich.progress.TaskProgressColumn(),
            rich.progress.TimeElapsedColumn(),
            console=err.real(),
        )
        self._depth = 0

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        if self._depth == 0:
            self._bar.start()
        self._depth += 1
        task_id = self._bar.add_task(description, total=total)
        try:
            yield _RichTask(self._bar, task_id)
            task = self._bar.tasks[task_id]
            self._bar.update(task_id, total=task.total or 1, completed=task.total or 1)
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._bar.stop()

    def log(self, message: str) -> None:
        self._bar.console.print(message)


def progress_for(json_output: bool) -> Progress:
    if json_output:
        return NullProgress()
    return RichProgress() if err.is_terminal else LineProgress()


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_edge=False)
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    out.print(t)


def checks_table(title: str, checks: Sequence[Check]) -> None:
    table(title, ["check", "ok", "detail"], [(c.name, "yes" if c.ok else "NO", c.detail) for c in checks])


def show_plan(plan: ServicePlan) -> None:
    out.print(
        f"[bold]{plan.name}[/] ({plan.service.plugin}): data at {plan.current or '(no data)'}, target {plan.target}"
    )
    if plan.will_init:
        out.print("  the plugin will create the data first")
    if not plan.steps:
        out.print("  nothing to do")
    rows = []
    for index, step in enumerate(plan.steps):
        notes = []
        if step.warning:
            notes.append(f"warning: {step.warning}")
        if step.irreversible:
            notes.append("irreversible")
        if index in plan.restores:
            notes.append(f"restores backup {plan.restores[index].id} (data loss)")
        rows.append((index + 1, step.direction, step.label, step.description, "; ".join(notes)))
    if rows:
        table(None, ["#", "dir", "step", "what", "needs"], rows)
    failed = [c for c in plan.checks if not c.ok]
    if plan.checks:
        out.print(f"  pre-checks: {len(plan.checks) - len(failed)}/{len(plan.checks)} passed")
    if plan.backup_bytes is not None and plan.steps:
        out.print(f"  backups need about {plan.backup_bytes / 2**20:.1f} MiB")
    for refusal in plan.refusals:
        out.print(f"  [red]refused:[/] {refusal.message}")
        if refusal.hint:
            out.print(f"    next: {refusal.hint}")
