"""Batched background migrations: what must be finished before a hop, and finishing those a hop
queued. GitLab runs them in Sidekiq while it serves; the migration unit runs while GitLab is
stopped, so each is run to its end in the foreground with GitLab's own rake task, then the
table is watched until every one is finished or finalized."""

from __future__ import annotations

import time
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.model import Check
from nixos_migrate_gitlab import database, tools, versions

#: seconds between two looks at the table while waiting
POLL = 2.0


def pending_check(service: Service) -> Check:
    """Every batched background migration finished or finalized: GitLab's migrations of the
    next stop refuse to run otherwise ("Expected batched background migration ... to be marked
    as 'finished'"), half-way through the hop."""
    left = database.unfinished(service)
    if not left:
        return Check("batched background migrations finished", True, f"{len(database.batched(service))} all done")
    listed = "; ".join(b.describe() for b in left[:10]) + (f"; and {len(left) - 10} more" if len(left) > 10 else "")
    tasks = " ".join(f"'{b.finalize_task()}'" for b in left[:3])
    return Check(
        "batched background migrations finished",
        False,
        f"{len(left)} not finished: {listed}. Let GitLab run until they are, or finish them: gitlab-rake {tasks}",
    )


def legacy_check(service: Service, root: Path, version: str) -> Check:
    """Background migrations of the kind before batched ones (GitLab 15.0 and older): jobs in
    Sidekiq's queues, counted by GitLab itself."""
    name = "legacy background migrations finished"
    if versions.key(version) >= (15, 1):
        return Check(name, True, "none since GitLab 15.1")
    if not tools.has_tool(root, "gitlab-rails"):
        return Check(name, False, f"cannot count them: {root}/bin/gitlab-rails does not exist")
    done = service.run.run(
        [root / "bin" / "gitlab-rails", "runner", "puts Gitlab::BackgroundMigration.remaining"],
        env=tools.BASE_ENV,
        check=False,
    )
    last = done.output.strip().splitlines()[-1:] or [""]
    if done.returncode != 0 or not last[0].strip().isdigit():
        return Check(name, False, f"gitlab-rails runner failed: {done.output.strip()[-500:]}")
    remaining = int(last[0])
    return Check(name, remaining == 0, f"{remaining} remaining" if remaining else "none remaining")


def finish(service: Service, root: Path, timeout: float) -> int:
    """Run every unfinished batched background migration to its end; the count finished. A
    failed one, or one still running after `timeout` seconds, is an error (the step's backup is
    restored)."""
    deadline = time.monotonic() + timeout
    started = database.unfinished(service)
    failed = [b for b in started if b.status == database.FAILED]
    if failed:
        raise MigrateError(
            "batched background migrations failed: " + "; ".join(b.describe() for b in failed),
            hint="GitLab's docs on failed background migrations say how to retry them",
        )
    with service.progress.task("batched background migrations", total=len(started)) as task:
        for migration in started:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            tools.rake(service, root, migration.finalize_task(), timeout=remaining)
            task.advance()
    while True:
        left = database.unfinished(service)
        if not left:
            return len(started)
        if time.monotonic() >= deadline:
            raise MigrateError(
                f"batched background migrations not finished after {timeout:.0f} s: "
                + "; ".join(b.describe() for b in left[:10]),
                hint="raise settings.background_timeout",
            )
        time.sleep(POLL)
