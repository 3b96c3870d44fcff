"""The studio's help: every key, what each pane shows, and how to read the chart and the layer map."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Markdown

HELP = """\
# Gemma Studio

## Keys

- `p` pause or resume training
- `s` save a checkpoint now · `e` evaluate on the validation split now
- `x` stop training: saves a checkpoint, asks first
- `l` loss axis linear or logarithmic · `t` x axis optimizer step or tokens seen
- `[` `]` less or more smoothing of the training curve
- `o` export the loss chart as shown (axis, smoothing, scale) to PNG and SVG, and its series
  to CSV, in the run folder's `exports/` (named by the time); a toast names the files
- `g` Charts: every number the run logs, one chart each (loss, validation loss, perplexity,
  bits per byte, grad norm, tokens/s, each optimiser's learning rate, MFU on a GPU), on the
  same `t` `l` `[` `]` as the loss chart; `←` `→` (or a click) move a cursor whose values
  show under the charts, `i` `o` zoom in and out around it, `0` every step again; `Tab` or
  `1`-`8` the next chart where one shows at a time; `a` each layer's entropy, then RMS; `Esc` back
- `/` write to the model in the Chat pane (from anywhere, the settings fields too) · `Esc` cancel
  the reply being written · `c` copy the last reply to the clipboard
- `z` or `F11` zoom the focused pane (else the chart) to the whole screen; again, or `Esc`, to come back
- `Tab` move between the Layers pane and the chat fields · `a` shade the layers by grad norm,
  attention entropy or residual RMS
- `i` Inspect: one prompt run through the current weights, looked inside (below); there `↑` `↓`
  (or `PgUp` `PgDn`) change the layer, `←` `→` the head, `/` edits the prompt, `Enter` or `r` runs
  it again, `v` switches the lens table, `Esc` closes
- `w` Samples: what the model wrote at each step, its `--sample_prompt` continuations and the
  chat replies, newest first (`o` oldest first); the selected one whole, then the same prompt
  at every step, so the text can be seen improving; `Esc` back
- `m` where the terminal is too small for every pane, some are hidden whole (never cut): `m`
  zooms each hidden one in turn (the footer shows `m` only then)
- `Ctrl+T` (in a browser `T`) change the theme (remembered for next time) · `Ctrl+P` every command, searchable
  ("Notifications on / off": a run that finishes, stops, fails or diverges, its loss not finite
  or its validation loss rising 3 evaluations in a row, rings the bell and, in iTerm2, Windows
  Terminal, kitty, WezTerm, foot, Ghostty and the browser page, shows a desktop notification)
- `F1` or `?` this help
- `q` quit: while training, stop the run (saving) or keep it training in the background;
  an attached studio detaches and the run goes on
- `u` the chat's replies shaded by how sure the model was of each token; on a reply `←` `→`
  or a click on a token show what else it weighed there (Token probabilities, below)

## Inspect (`i`)

One forward pass of a prompt (the last chat prompt at first) on the weights as they are
now; during training it takes its turn between two steps, as a chat reply does.

**Attention map**: one head of one layer. Row *i* is token *i*, and each column a token
it reads; the stronger the shade, the more weight. Blank cells are tokens it cannot see:
those after it, and in a sliding layer those too far back.

**Sliding and full layers**: a sliding layer lets each token look only at the last
`window` tokens (itself included), so its cost stays flat however long the text grows;
its map is a band along the diagonal. A full (global) layer, one in six in Gemma 3, sees
every earlier token: that is how something said long ago still reaches the present.

**Prompt tokens**: each token shaded by its surprisal, the bits the model needed for it
given the tokens before it (the number after it). Strong shades are what the model did not
expect; the first token has no prediction.

**Logit lens**: each layer's output put through the model's final norm and output head, as
if the model stopped there: what it would predict at that depth. Read down the table to
see the prediction take shape; the last layer's row is the model's own. `v` switches
between the last position's top tokens and every position's top token.

## Panes

**Loss**: training loss at each optimizer step (fine dots), the same smoothed
(bold line, `[` `]` change how much), validation loss (bullets) and the learning
rate, read on the right axis. The legend is in the pane's top border, so it never
covers a curve; on the tokens axis the ticks carry their unit (`50k`, `1.2M`). In a
short terminal the axis titles give their rows to the curves.

**Layers**: one cell per decoder layer, `S` for sliding-window attention and `F`
for full attention (Gemma 3 has one full layer in six). The shading is each
layer's gradient norm at the latest step, against the other layers: darker is
smaller; `a` shades it instead by attention entropy or residual RMS, measured at each
evaluation on one fixed probe prompt (a passage of Hamlet). Attention entropy (in nats)
says how spread out a layer's attention is: high, it reads many tokens a little; low, it
has learned to look at a few, and a falling entropy is attention sharpening. Residual RMS
is the size of the running sum each layer adds to; a jump at one layer shows where it
writes most. Arrow keys or a click select a layer; its shapes are listed below (in a
short terminal, its type and value only: `z` zooms the pane for the rest).

**Chat**: continues your prompt with the weights as they are at this moment of
training. A model trained from scratch continues text; it does not follow
instructions. A reply cut by max tokens or a full context ends with `…` and says
which; a prompt too long for the context keeps its last tokens, and says so. On a
CPU a reply takes turns with training steps. Every exchange is kept in the run
folder's `chat.jsonl` (prompt, reply, step, settings).

**Token probabilities** (`u`, remembered): each token of a reply is shaded by the
probability the model gave it, its own before temperature, top-k and top-p change the
draw: pale where it was sure, strong where it hardly expected that token; the legend under
the chat names the bands. On a reply (the newest has the focus, `Tab` goes to the others,
or click a token) `←` `→` pick a token, and the tokens the model weighed there show under
the reply with their probabilities, the one it wrote marked `▸`.

**Run**: state, progress, speed, losses, the best validation loss and the last
checkpoint. In a short terminal, the lines that matter most, as many as fit.

**Machine**: the GPU's memory, use, temperature and power (NVIDIA's NVML), and
this process's memory in torch. Without an NVIDIA GPU: this process's CPU and RAM.
"""


class HelpScreen(ModalScreen[None]):
    """The help, scrolled by the arrow keys, PgUp/PgDn, Home/End and the mouse from the moment
    it opens (its text has the focus); its own footer says how to close it."""

    BINDINGS = [
        Binding("escape,q,f1,question_mark", "dismiss", "Close help", key_display="Esc/q/F1"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog"):
            yield Markdown(HELP, id="help-text")
        yield Footer()

    def on_mount(self) -> None:
        dialog = self.query_one("#help-dialog")
        dialog.border_subtitle = "↑ ↓ PgUp PgDn scroll · Esc closes"
        dialog.focus()
