"""How a run stands, as JSON values: from its server while it is live, from its files when
not (finished, stopped, or its process gone). ``gemma-core status`` prints it; the studio's
run picker lists it for every run under a folder."""

from __future__ import annotations

import os
from pathlib import Path

from gemma_core.errors import UserError
from gemma_core.run.status import status_from_files, status_of
from gemma_core.serve import server_files
from gemma_core.serve.client import KeyNotReadable, ProcessGone, RunNotAnswering, RunNotRunning, connect

_ON_STDERR = object()  # connect's own default: a note on stderr before talking to a remote host


def run_status(folder: Path, announce=_ON_STDERR) -> dict:
    """A run's state as JSON values: from its server when it is live, from its files when not.

    A live run whose server is slow is never called dead: while its process lives it is "not
    answering" (with how long it was waited for), or "live" when its key is another user's.
    ``announce``: see ``connect`` (None: a run serving on a non-loopback host is refused)."""
    _require_readable_folder(folder)
    kwargs = {} if announce is _ON_STDERR else {"announce": announce}
    try:
        snap = connect(folder, **kwargs).snapshot()
        return status_of(snap, live=True, state=snap.state.value)
    except RunNotAnswering as err:
        return _live_but_unseen(folder, err, "not answering", not_answering_s=err.waited_s)
    except KeyNotReadable as err:
        return _live_but_unseen(folder, err, "live")
    except ProcessGone:
        return status_from_files(folder, died=True)
    except RunNotRunning:
        return status_from_files(folder, died=_server_files_left(folder))


def _live_but_unseen(folder: Path, why, state: str, **extra) -> dict:
    """A live run this client cannot ask: how it stands from its files, said to be live."""
    try:
        status = status_from_files(folder, died=False)
    except UserError:
        raise why from None
    status.pop("resume_command", None)  # it is running: resuming it would make two writers
    status.update(state=state, live=True, problem=str(why), **extra)
    return status


def _server_files_left(folder: Path) -> bool:
    """Whether the run left its server files behind (it stopped answering without removing them)."""
    try:
        return server_files.read_server_files(folder) is not None
    except UserError:
        return True


def _require_readable_folder(folder: Path) -> None:
    try:
        os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{folder}: run folder not found") from None
    except PermissionError:
        raise UserError(f"{folder}: cannot read this folder (permission denied); run this as the user who "
                        "owns it, or give it read permission") from None
    except OSError as err:
        raise UserError(f"{folder}: cannot read this folder ({err.strerror})") from None
