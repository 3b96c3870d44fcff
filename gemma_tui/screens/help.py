"""The studio's help: every key, what each pane shows, and how to read the chart and the layer map."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# Gemma Studio

## Keys

- `p` pause or resume training
- `s` save a checkpoint now · `e` evaluate on the validation split now
- `x` stop training: saves a checkpoint, asks first
- `l` loss axis linear or logarithmic · `t` x axis optimizer step or tokens seen
- `[` `]` less or more smoothing of the training curve
- `/` write to the model in the Chat pane (from anywhere, the settings fields too) · `Esc` cancel
  the reply being written · `c` copy the last reply to the clipboard
- `z` or `F11` zoom the focused pane (else the chart) to the whole screen; again, or `Esc`, to come back
- `Tab` move between the Layers pane and the chat fields
- `Ctrl+T` change the theme (remembered for next time) · `Ctrl+P` every command, searchable
- `F1` or `?` this help
- `q` quit: while training, stop the run (saving) or keep it training in the background;
  an attached studio detaches and the run goes on

## Panes

**Loss**: training loss at each optimizer step (fine dots), the same smoothed
(bold line, `[` `]` change how much), validation loss (bullets) and the learning
rate. In the legend `L` marks a series read on the left axis (loss) and `⅃` one
read on the right axis (learning rate). In a short terminal the legend moves to
the pane's border, so the curves keep every row.

**Layers**: one cell per decoder layer, `S` for sliding-window attention and `F`
for full attention (Gemma 3 has one full layer in six). The shading is each
layer's gradient norm at the latest step, against the other layers: darker is
smaller. Arrow keys or a click select a layer; its shapes are listed below (in a
short terminal, its type and value only: `z` zooms the pane for the rest).

**Chat**: continues your prompt with the weights as they are at this moment of
training. A model trained from scratch continues text; it does not follow
instructions. A reply cut by max tokens or a full context ends with `…` and says
which; a prompt too long for the context keeps its last tokens, and says so. On a
CPU a reply takes turns with training steps. Every exchange is kept in the run
folder's `chat.jsonl` (prompt, reply, step, settings).

**Run**: state, progress, speed, losses, the best validation loss and the last
checkpoint. In a short terminal, the lines that matter most, as many as fit.

**Machine**: the GPU's memory, use, temperature and power (NVIDIA's NVML), and
this process's memory in torch. Without an NVIDIA GPU: this process's CPU and RAM.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close help")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog"):
            yield Markdown(HELP, id="help-text")
