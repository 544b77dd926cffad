"""The error classes every layer raises. A UserError's message says what is wrong and how to fix it; the runner
shows it as one line and keeps the run resumable. Anything else is a bug and is logged with its traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input, a missing file or a refused action: the message names the file (or key) and the fix."""

    resumable = True
    """False where --resume would stop at the same error: the message names the command that goes on instead
    (one that re-makes what is lost), and a failed step's report advises only that."""


class StepError(UserError):
    """A step cannot go on; the message says what is wrong and how to fix it."""


class RedoError(StepError):
    """A step's input is lost or inconsistent, and only re-making an earlier step (the --start-iteration the
    message names) restores it: re-running this step, as --resume does, meets the same error."""

    resumable = False


class ReviewError(StepError):
    """A review round-trip cannot go on; the message says what is wrong and what to do."""


class Interrupted(Exception):
    """The user asked to stop; the state on disk is resumable."""
