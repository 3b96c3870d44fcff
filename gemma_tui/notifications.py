"""Telling someone who looks elsewhere that their run needs them: it finished, stopped, failed,
or is diverging (a non-finite loss, or validation loss rising evaluation after evaluation).

``RunWatcher`` decides: it compares each new snapshot with what it saw before and returns a
``Notice`` per event, once (the next snapshot, or a redraw, never repeats it). The studio
then shows it outside the app: the terminal's bell and, where the terminal shows them, an
OSC 9 desktop notification (iTerm2, Windows Terminal, kitty, WezTerm, foot, Ghostty, and the
browser and desktop studio's page, which turns it into a desktop notification). A saved
preference turns that off; the toasts inside the studio stay.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from collections.abc import Mapping

from gemma_core.safe_text import printable
from gemma_core.run.events import ENDED_STATES, RunSnapshot, RunState

RISING_EVALS = 3  # validation loss higher than the evaluation before, this many times in a row
OSC9_MAX_CHARS = 200  # a desktop notification shows a line or two


@dataclass(frozen=True)
class Notice:
    kind: str  # "finished", "stopped", "failed" or "diverging"
    title: str
    message: str


def rising_streak(snap: RunSnapshot) -> int:
    """How many of the newest evaluations each had a higher validation loss than the one before."""
    losses = [result.val_loss for result in snap.eval_history]
    streak = 0
    for before, after in zip(reversed(losses[:-1]), reversed(losses)):
        if not after > before:
            break
        streak += 1
    return streak


def _non_finite(value: float | None) -> bool:
    return value is not None and not math.isfinite(value)


class RunWatcher:
    """Which changes between snapshots deserve a notice. The first snapshot only sets where
    things stand: opening a run that has already ended, or is already diverging, says nothing."""

    def __init__(self, rising_evals: int = RISING_EVALS) -> None:
        self.rising_evals = max(1, rising_evals)
        self._seen: RunSnapshot | None = None
        self._non_finite_told = False  # until a finite validation loss says the run recovered

    def observe(self, snap: RunSnapshot) -> list[Notice]:
        seen, self._seen = self._seen, snap
        if seen is None:
            self._non_finite_told = self._loss_not_finite(snap, None)
            return []
        notices = []
        if self._recovered(seen, snap):
            self._non_finite_told = False
        if not self._non_finite_told and self._loss_not_finite(snap, seen):
            self._non_finite_told = True
            notices.append(self._non_finite_notice(snap))
        if rising_streak(snap) >= self.rising_evals > rising_streak(seen):
            notices.append(self._rising_notice(snap))
        if snap.state in ENDED_STATES and seen.state not in ENDED_STATES:
            notices.append(self._ended_notice(snap))
        return notices

    @staticmethod
    def _loss_not_finite(snap: RunSnapshot, seen: RunSnapshot | None) -> bool:
        newest_eval = snap.eval_history[-1].val_loss if snap.eval_history else None
        return (_non_finite(snap.latest.loss if snap.latest else None) or _non_finite(newest_eval)
                or (seen is not None and snap.skipped_steps > seen.skipped_steps))

    @staticmethod
    def _recovered(seen: RunSnapshot, snap: RunSnapshot) -> bool:
        """A validation result newer than the last one seen, and finite."""
        if not snap.eval_history:
            return False
        newest = snap.eval_history[-1]
        before = seen.eval_history[-1].step if seen.eval_history else -1
        return newest.step > before and math.isfinite(newest.val_loss)

    @staticmethod
    def _non_finite_notice(snap: RunSnapshot) -> Notice:
        skipped = (f"; {snap.skipped_steps:,} step{'s' if snap.skipped_steps != 1 else ''} skipped so far"
                   if snap.skipped_steps else "")
        return Notice("diverging", "Run diverging",
                      f"the loss is not finite at step {snap.step:,}{skipped}. "
                      "A lower --learning_rate usually helps.")

    def _rising_notice(self, snap: RunSnapshot) -> Notice:
        streak = rising_streak(snap)
        evals = snap.eval_history
        first, newest = evals[-streak - 1], evals[-1]
        return Notice("diverging", "Run diverging",
                      f"validation loss rose {streak} evaluations in a row: {first.val_loss:.4f} at step "
                      f"{first.step:,} to {newest.val_loss:.4f} at step {newest.step:,} (best "
                      f"{snap.best_eval.val_loss:.4f} at step {snap.best_eval.step:,}).")

    @staticmethod
    def _ended_notice(snap: RunSnapshot) -> Notice:
        if snap.state == RunState.FAILED:
            return Notice("failed", "Training failed",
                          f"training failed at step {snap.step:,}: {snap.error or 'no reason given'}")
        if snap.state == RunState.STOPPED:
            return Notice("stopped", "Training stopped",
                          f"training stopped at step {snap.step:,} of {snap.max_steps:,}.")
        best = (f" Best validation loss {snap.best_eval.val_loss:.4f} at step {snap.best_eval.step:,}."
                if snap.best_eval else "")
        return Notice("finished", "Training finished", f"training finished at step {snap.step:,}.{best}")


# ------------------------------------------------------------- outside the app
# Terminals known to show OSC 9 as a desktop notification (others may print it or beep: they
# get the bell alone). ``textual`` is the browser and desktop studio's page (textual-serve).
OSC9_TERM_PROGRAMS = frozenset({"iTerm.app", "WezTerm", "ghostty", "textual"})
OSC9_TERMS = frozenset({"xterm-kitty", "foot", "foot-extra", "xterm-ghostty", "wezterm"})


def terminal_shows_osc9(environ: Mapping[str, str] = os.environ) -> bool:
    return (environ.get("TERM_PROGRAM") in OSC9_TERM_PROGRAMS or environ.get("TERM") in OSC9_TERMS
            or "WT_SESSION" in environ or "KITTY_WINDOW_ID" in environ)


def alert_sequence(text: str, osc9: bool) -> str:
    """The bell, after an OSC 9 notification of ``text`` where the terminal shows one. The text
    is one line of printable characters: nothing in it can end the sequence early."""
    bell = "\a"
    if not osc9:
        return bell
    line = " ".join(printable(text).split())[:OSC9_MAX_CHARS]  # no ESC, BEL or ST: none ends it early
    return f"\x1b]9;{line}\x07{bell}"


def write_to_terminal(app, data: str) -> None:
    """Send ``data`` to the studio's terminal as it is (the one seam tests replace)."""
    driver = getattr(app, "_driver", None)  # Textual's own bell() writes through it the same way
    if driver is not None and not app.is_headless:
        driver.write(data)


def announce(app, notice: Notice, outside: bool, environ: Mapping[str, str] = os.environ) -> None:
    """Show ``notice``: a toast for a diverging run (the studio already toasts a run's end),
    and, when ``outside``, the bell and an OSC 9 notification."""
    if notice.kind == "diverging":
        app.notify(notice.message, title=notice.title, severity="warning", timeout=30)
    if outside:
        write_to_terminal(app, alert_sequence(f"Gemma Studio: {notice.message}", terminal_shows_osc9(environ)))
