"""The CLI's own progress bar for fine-tuning: one Rich bar that moves per optimizer step.

The Trainer's tqdm bar and its printed log dicts are off (the CLI owns the console, see
:mod:`imr_outcome.logs`); this callback shows the steps instead, on stderr, and is a no-op
for model kinds that do not fine-tune.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback

from imr_outcome.console import err_console


class RichStepProgress(TrainerCallback):
    """A Trainer callback that draws fine-tuning steps on ``progress``.

    Args:
        progress: a started :class:`rich.progress.Progress`.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        total = int(state.max_steps) or None
        if self.task is None:
            self.task = self.progress.add_task("fine-tuning", total=total)
        else:  # a second fit in the same run (cross-fitting): start over
            self.progress.reset(self.task, total=total)

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self.progress.update(self.task, completed=int(state.global_step))

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
        if logs and "loss" in logs and self.task is not None:
            self.progress.update(
                self.task, description=f"fine-tuning (loss {float(logs['loss']):.3f})"
            )


@contextlib.contextmanager
def training_progress() -> Iterator[RichStepProgress]:
    """A :class:`RichStepProgress` on a transient bar on stderr, for the ``with`` block."""
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        yield RichStepProgress(progress)
