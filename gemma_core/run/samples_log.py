"""The continuations a run sampled (``--sample_prompt``), by step: kept for its snapshot,
and read back from its ``samples.jsonl``.

A snapshot carries them so any client (an attached studio has nothing else) can show how
the text improved. They are bounded like every history: past ``capacity`` steps, every
other sampled step is dropped (the first and the newest kept), so a long run's samples
stay spread over the whole run and a snapshot stays small.
"""

from __future__ import annotations

from pathlib import Path

from gemma_core.run.layout import SAMPLES
from gemma_core.run.logs import damaged_lines_note, read_shown_jsonl
from gemma_core.run.events import SampleProduced

SAMPLE_STEPS_KEPT = 48


class SampleHistory:
    def __init__(self, capacity: int = SAMPLE_STEPS_KEPT) -> None:
        self.capacity = max(2, capacity)
        self._by_step: dict[int, dict[str, SampleProduced]] = {}  # step -> prompt -> sample
        self._snapshot: tuple[SampleProduced, ...] | None = ()

    def add(self, sample: SampleProduced) -> None:
        # The same prompt at the same step again (a resumed run replaying its log) replaces it.
        self._by_step.setdefault(sample.step, {})[sample.prompt] = sample
        if len(self._by_step) > self.capacity:
            steps = sorted(self._by_step)
            kept = set(steps[::2]) | {steps[-1]}
            self._by_step = {step: self._by_step[step] for step in steps if step in kept}
        self._snapshot = None

    def snapshot(self) -> tuple[SampleProduced, ...]:
        """Every kept sample, by step, in the order its prompts were sampled."""
        if self._snapshot is None:
            self._snapshot = tuple(sample for step in sorted(self._by_step)
                                   for sample in self._by_step[step].values())
        return self._snapshot


def read_samples(output_dir: Path) -> tuple[list[SampleProduced], str | None]:
    """The samples in ``output_dir/samples.jsonl``, oldest first, and a note on the lines left
    out. The file is untrusted and only shown: a damaged or torn line is skipped and counted,
    never a reason to refuse the run."""
    path = Path(output_dir) / SAMPLES
    try:
        samples, skipped = read_shown_jsonl(path, _sample_from_entry)
    except OSError as err:
        return [], f"{path}: cannot read ({err.strerror}); its samples are not shown"
    return samples, damaged_lines_note(path, skipped)


def _sample_from_entry(entry: dict) -> SampleProduced | None:
    step, prompt, text = entry.get("step"), entry.get("prompt"), entry.get("text")
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0
            and isinstance(prompt, str) and isinstance(text, str)):
        return None
    return SampleProduced(step, prompt, text)
