"""Errors a user can act on.

A ``UserError`` carries one line that names the file, line or field at fault and
what to do. The command line prints it without a traceback and exits with 2.
"""


class UserError(Exception):
    """A mistake in the user's input or environment, explained in one line."""

    exit_code = 2


class DiskFull(UserError):
    """A write ran out of space (ENOSPC); what was on disk before is intact."""


class Cancelled(Exception):
    """Work stopped because the user asked to stop (not a failure)."""
