"""The fine-tuning progress bar moves per optimizer step and starts over for a second fit."""

from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console
from rich.progress import Progress

from imr_outcome.progress import RichStepProgress


def test_the_bar_follows_the_trainer_s_steps_and_loss() -> None:
    with Progress(console=Console(file=None, force_terminal=False, quiet=True)) as progress:
        callback = RichStepProgress(progress)
        callback.on_train_begin(None, SimpleNamespace(max_steps=5), None)
        for step in (1, 2, 3):
            callback.on_step_end(None, SimpleNamespace(global_step=step), None)
        callback.on_log(None, None, None, logs={"loss": 0.6931, "learning_rate": 1e-5})
        (task,) = progress.tasks
        assert (task.completed, task.total) == (3, 5)
        assert task.description == "fine-tuning (loss 0.693)"

        callback.on_train_begin(None, SimpleNamespace(max_steps=8), None)  # cross-fitting
        (task,) = progress.tasks
        assert (task.completed, task.total) == (0, 8)
