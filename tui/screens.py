"""Modal screens: the confirmation before any signal, and the keyboard help."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """Asks before acting; "No" (or the label ``no`` gives it) has the focus, Escape answers No."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,n", "answer(False)", "No"),
        Binding("y", "answer(True)", "Yes"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question = question
        self.labels = (yes, no)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            with Horizontal(id="buttons"):
                yield Button(self.labels[0], variant="error", id="yes")
                yield Button(self.labels[1], variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


HELP = """\
[b]gpudoc monitor[/b]

  [b]↑ ↓[/b] / mouse  select a process
  [b]s[/b]            sort by GPU memory → CPU% → PID → age → user
  [b]u[/b] / [b]g[/b]        show one user's / one GPU's processes (cycles)
  [b]c[/b]            clear the filters: show every process again
  [b]t[/b] / [b]k[/b]        terminate (SIGTERM) / kill (SIGKILL) the selected process
  [b]r[/b]            reap: end your orphaned GPU holders (`gpudoc reap --yes`)
  [b]x[/b]            stop the run (`gpudoc tui -- COMMAND`) and its processes
               (once it ended: the processes it left on a GPU)
  [b]v[/b]            curves: the next scalar alone (then losses, metrics again)
  [b]a[/b]            curves over step or relative time
  [b]\\[[/b] / [b]][/b]        less / more smoothing (TensorBoard's, 0 to 0.999)
  [b]l[/b]            list the checks that fired on the run
  [b]d[/b]            doctor: the environment checklist (`gpudoc doctor`)
  [b]m[/b]            metrics-check on logs or pred/target images
  [b]o[/b]            oom estimate of a model (`gpudoc oom estimate`)
  [b]b[/b]            oom max-batch: the largest batch that fits the GPU
  [b]e[/b]            events: a logdir's runs, tags, restarts, damage; trim
               and export
  [b]M[/b]            mask sweep: Dice/IoU by threshold, the best and Otsu's;
               the audit
  [b]ctrl+p[/b]       the same from the command palette: "gpudoc: doctor"…
  [b]?[/b]            this help
  [b]q[/b]            quit (a run still going, or what it left, is stopped
               after asking)

Tool screens: Enter runs, Escape cancels (else closes), q closes,
ctrl+s saves the --json (asks before replacing a file).
Above the table: its sort key, its filters, how many rows are shown.
Curves (a run or --logdir): raw values as dots, the smoothed line bright.

Verdicts come from `gpudoc reap`: [red]orphan[/] (parent gone, idle, no CUDA
context), [yellow]detached[/] (parent gone, still working), [green]active[/],
[cyan]protected[/]; [magenta]unconfirmed[/]: an orphan whose CUDA context or CPU
use is unknown (r leaves it).
Every action asks first; only your own processes can be signalled (unless
root). With --readonly, t, k, r and x are off.
"""


class HelpScreen(ModalScreen[None]):
    """The keys, and what the verdicts mean."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):  # taller than the terminal: it scrolls
            yield Static(HELP, id="help-text")

    def on_mount(self) -> None:
        box = self.query_one("#help")
        box.border_subtitle = "Escape closes · ↑ ↓ scroll"
        box.focus()

    def action_close(self) -> None:
        self.dismiss(None)
