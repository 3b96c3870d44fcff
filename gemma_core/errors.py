"""Failures told in one line, and the exit codes they end a command with.

    0    success
    1    an internal error: a bug in this program (the line says so and asks for --debug)
    2    the user's input or environment (the line names the file, line or field, and what to do)
    130  interrupted (Ctrl-C)

A ``UserError`` carries one line that names the file, line or field at fault and
what to do; an ``InternalError`` reports a failure that should never happen.
The command line prints either without a traceback (unless ``--debug``).
"""

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_INTERRUPTED = 130


class OneLineError(Exception):
    """A failure explained in one line; ``exit_code`` says whose it is."""

    exit_code = EXIT_USER


class UserError(OneLineError):
    """A mistake in the user's input or environment, explained in one line."""

    exit_code = EXIT_USER


class InternalError(OneLineError):
    """A failure that is a bug in this program (reported, never shown as the user's fault)."""

    exit_code = EXIT_INTERNAL


class DiskFull(UserError):
    """A write ran out of space (ENOSPC); what was on disk before is intact."""


class Cancelled(Exception):
    """Work stopped because the user asked to stop (not a failure)."""


def internal_message(err: BaseException) -> str:
    """The one line for an unexpected exception."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return (f"internal error ({type(err).__name__}{': ' + text if text else ''}); this is a bug: "
            "run the command again with --debug to see where, and please report it")
