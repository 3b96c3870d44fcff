"""The runs compared, as a table: one row per run with its preset, the settings that differ
between the runs, its best and final validation loss and bits per byte, and how far it went.

Sorted by any column: ``s`` moves the sort to the next column, ``r`` reverses it, and a
click on a header sorts by that column (again: the other way). A run without a value (no
evaluation yet) sorts last either way. Enter on a row posts ``RunChosen``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from gemma_core.run.run_summary import RunSummary, differing_settings
from gemma_core.safe_text import printable
from gemma_tui import formatting as fmt


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    numeric: bool = True


FIXED_BEFORE = (Column("run", "run", numeric=False), Column("preset", "preset", numeric=False))
FIXED_AFTER = (Column("best_val", "best val"), Column("best_bpb", "best bpb"), Column("final_val", "final val"),
               Column("final_bpb", "final bpb"), Column("steps", "steps"), Column("tokens", "tokens"),
               Column("wall", "wall clock"))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def row_values(name: str, summary: RunSummary, settings: list[str]) -> dict[str, object]:
    """The row's raw values by column key (what it sorts by); None where a run has none."""
    best, final = summary.best, summary.final
    values: dict[str, object] = {"run": name, "preset": summary.preset}
    values.update({f"setting:{key}": summary.settings.get(key) for key in settings})
    values.update(best_val=best.val_loss if best else None, best_bpb=_finite(best.bits_per_byte) if best else None,
                  final_val=final.val_loss if final else None,
                  final_bpb=_finite(final.bits_per_byte) if final else None,
                  steps=summary.steps, tokens=summary.tokens, wall=summary.elapsed_s)
    return values


def _setting_text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return ",".join(_setting_text(v) for v in value)
    return printable(str(value))


def cell_text(key: str, value: object) -> str:
    if value is None:
        return "-"
    if key in ("best_val", "final_val"):
        return fmt.loss(value)
    if key in ("best_bpb", "final_bpb"):
        return f"{value:.3f}"
    if key == "steps":
        return f"{value:,}"
    if key == "tokens":
        return fmt.count(value)
    if key == "wall":
        return fmt.duration(value)
    return _setting_text(value)


def sort_key(value: object) -> tuple:
    """Numbers by size, then text; a missing value is not compared (it goes last)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, _setting_text(value))


class CompareTable(DataTable):
    """One row per run; see the module's docstring."""

    # Not in the footer (q Quit stays first there): the table's border says them.
    BINDINGS = [
        Binding("s", "sort_next", "Sort by next column", show=False),
        Binding("r", "sort_reverse", "Reverse sort", show=False),
    ]

    class RunChosen(Message):
        """Enter on a run's row: show that run's curves."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.columns_shown: list[Column] = []
        self.rows_by_name: dict[str, dict[str, object]] = {}
        self.sort_column = "run"
        self.sort_reverse = False

    def set_runs(self, names: list[str], summaries: list[RunSummary]) -> None:
        """Show these runs (in order of ``names``, then sorted); redrawn only if anything changed."""
        settings = differing_settings(summaries)
        columns = [*FIXED_BEFORE, *(Column(f"setting:{key}", key, numeric=False) for key in settings), *FIXED_AFTER]
        rows = {name: row_values(name, summary, settings) for name, summary in zip(names, summaries)}
        if columns == self.columns_shown and repr(rows) == repr(self.rows_by_name):  # repr: nan == nan
            return
        self.columns_shown, self.rows_by_name = columns, rows
        if self.sort_column not in {column.key for column in columns}:
            self.sort_column, self.sort_reverse = "run", False
        self._rebuild()

    def ordered_names(self) -> list[str]:
        """The runs in the order the table shows them."""
        present = [name for name, row in self.rows_by_name.items() if row.get(self.sort_column) is not None]
        missing = [name for name, row in self.rows_by_name.items() if row.get(self.sort_column) is None]
        present.sort(key=lambda name: sort_key(self.rows_by_name[name][self.sort_column]), reverse=self.sort_reverse)
        return present + missing

    def _rebuild(self) -> None:
        chosen = self._name_under_cursor()
        self.clear(columns=True)
        for column in self.columns_shown:
            mark = (" ▼" if self.sort_reverse else " ▲") if column.key == self.sort_column else ""
            self.add_column(Text(column.label + mark, justify="right" if column.numeric else "left"), key=column.key)
        for name in self.ordered_names():
            row = self.rows_by_name[name]
            self.add_row(*(Text(cell_text(column.key, row.get(column.key)),
                                justify="right" if column.numeric else "left") for column in self.columns_shown),
                         key=name)
        if chosen in self.rows_by_name:
            self.move_cursor(row=self.get_row_index(chosen), animate=False)
        self.border_title = "Runs"
        self.border_subtitle = f"{self.describe_sort()} · s r or a click: sort · Enter: its curves"

    def _name_under_cursor(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - no row under the cursor
            return None

    def sort_by(self, key: str, reverse: bool | None = None) -> None:
        """Sort by the column ``key``; the same column again without ``reverse``: the other way."""
        if reverse is None:
            reverse = not self.sort_reverse if key == self.sort_column else False
        self.sort_column, self.sort_reverse = key, reverse
        self._rebuild()

    def describe_sort(self) -> str:
        label = next((c.label for c in self.columns_shown if c.key == self.sort_column), self.sort_column)
        return f"sorted by {label} {'▼' if self.sort_reverse else '▲'}"

    def action_sort_next(self) -> None:
        keys = [column.key for column in self.columns_shown]
        if keys:
            following = keys[(keys.index(self.sort_column) + 1) % len(keys)] if self.sort_column in keys else keys[0]
            self.sort_by(following, reverse=False)

    def action_sort_reverse(self) -> None:
        self.sort_by(self.sort_column, reverse=not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.RunChosen(str(event.row_key.value)))
