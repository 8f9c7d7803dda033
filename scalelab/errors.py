"""The project's errors, in the lowest layer so that every package may raise them.

Three branches, as kopf separates its errors:

- :class:`UserError` -- something the user can fix: a malformed config, a bad
  parameter, a missing dataset, an out-of-range order. The CLI prints its one line
  and exits with status 2.
- :class:`TemporaryError` -- an operational fault that may go away (a broker or a
  Prometheus that does not answer yet); ``retry_after_s`` says when to try again.
- :class:`PermanentError` -- an operational fault that retrying will not fix (an
  agent that kept dying, a stack that cannot start).

Anything else is a bug and keeps its traceback: the CLI catches only
:class:`ScalelabError`.
"""

from __future__ import annotations


class ScalelabError(Exception):
    """The base of every error the project raises on purpose."""

    exit_code = 1


class UserError(ScalelabError, ValueError):
    """Input the user can fix; the message names the key, the value and the rule."""

    exit_code = 2


class OrderError(UserError):
    """A scale or config order that cannot be applied (a malformed message, a limit
    that is not a range); the message names the field and the value."""

    def __init__(self, message: str, transaction_id=None, order=None) -> None:
        super().__init__(message)
        self.transaction_id, self.order = transaction_id, order


class OperationalError(ScalelabError):
    """Something outside the project's code failed (a server, a process, a disk)."""

    exit_code = 3


class TemporaryError(OperationalError):
    """A fault that may go away; try again after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = float(retry_after_s)


class PermanentError(OperationalError):
    """A fault that retrying will not fix."""


class RunInterrupted(ScalelabError):
    """Ctrl-C (a ``KeyboardInterrupt``) during a run: what was finished is kept in
    ``folder``, and ``scalelab run --resume FOLDER`` finishes the rest (the CLI says so
    and exits with 130, as a shell does for SIGINT)."""

    exit_code = 130

    def __init__(self, folder, *others) -> None:
        """``folder``: the run to resume; ``others``: more unfinished runs of the same
        command (several experiments run together), each resumed the same way."""
        more = "".join(f" and `scalelab run --resume {f}`" for f in others)
        super().__init__(f"interrupted: resume with `scalelab run --resume {folder}`{more}")
        self.folder = folder
        self.folders = [folder, *others]

