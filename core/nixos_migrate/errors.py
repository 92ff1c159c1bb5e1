"""The one error hierarchy. Every failure the tool reports is a `MigrateError`.

Each class carries the process exit code of DESIGN §6 and, where one exists, the next thing the
operator should do (`hint`), which the CLI prints after the cause.
"""

from __future__ import annotations


class MigrateError(Exception):
    """Root of every error nixos-migrate raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


# -- exit 2: bad usage or manifest -------------------------------------------------------------


class UsageError(MigrateError):
    """The command line asks for something that cannot be (unknown service, bad version...)."""


class ManifestError(MigrateError):
    """The manifest cannot be read or does not validate; the message names file and key path."""


class PluginError(MigrateError):
    """A plugin is unknown, failed to load, or broke the hook contract."""


# -- exit 3: refused, nothing changed ----------------------------------------------------------


class Refused(MigrateError):
    """The run was refused before anything changed."""

    exit_code = 3


class NeedsAcceptance(Refused):
    """A step carries a warning, is irreversible or loses data, and was not accepted."""


class JournalDirty(Refused):
    """A previous run stopped in the middle of a step; `--resume` or `--rollback` is needed."""


class LockHeld(Refused):
    """Another nixos-migrate run holds the service's lock."""


class PrecheckFailed(Refused):
    """A pre-check failed (plugin checks, free space, writable directories, users, binaries)."""


class VersionMismatch(Refused):
    """The version detected in the data differs from the one the journal recorded."""


class StepsPending(Refused):
    """`plan --fail-if-pending`: the data is not at its target yet (the NixOS unit's gate)."""


# -- exit 1 / 4: a step failed ------------------------------------------------------------------


class CommandFailed(MigrateError):
    """An external command exited non-zero. Inside a step this leads to a restore."""

    exit_code = 1

    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        tail = "\n".join(output.strip().splitlines()[-20:])
        super().__init__(f"command {argv[0]!r} exited with {returncode}" + (f":\n{tail}" if tail else ""))
        self.argv = argv
        self.returncode = returncode
        self.output = output


class ChecksFailed(MigrateError):
    """`verify` found the data unhealthy (nothing was changed)."""

    exit_code = 1


class StepFailed(MigrateError):
    """A step failed and the data was restored from the backup taken before it."""

    exit_code = 1


class RestoreFailed(MigrateError):
    """A step failed and restoring its backup failed too: the operator must act."""

    exit_code = 4
