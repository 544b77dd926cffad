"""The error classes every layer raises. A UserError's message says what is wrong and how to fix it; the runner
shows it as one line and keeps the run resumable. Anything else is a bug and is logged with its traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input, a missing file or a refused action: the message names the file (or key) and the fix."""


class StepError(UserError):
    """A step cannot go on; the message says what is wrong and how to fix it."""


class ReviewError(StepError):
    """A review round-trip cannot go on; the message says what is wrong and what to do."""


class Interrupted(Exception):
    """The user asked to stop; the state on disk is resumable."""
