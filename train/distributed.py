"""Data-parallel training across processes: which process this is, and how they finish.

``imr-outcome train`` runs unchanged under ``torchrun --nproc_per_node N`` or
``accelerate launch --num_processes N``. Both start N copies of the command with the
``torch.distributed`` environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``); the Hugging Face Trainer builds its DDP from them
(through accelerate's ``PartialState``: NCCL on GPUs, gloo on CPUs).

Every process reads the same dataset and computes the same folds, inner folds and
training windows (all seeded), and the Trainer hands each its share of every batch. The
fitted network is the same on every rank, so calibration, threshold and OOD fitting give
the same results everywhere; only rank 0 (:func:`is_main_process`) tracks, writes and
registers. The other ranks then wait at :func:`finish` until rank 0 is done.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

import torch.distributed as dist

from imr_outcome.errors import InvalidInputError

logger = logging.getLogger(__name__)

#: How long the other ranks wait for rank 0 to evaluate, log and register after training.
#: Its own gloo group carries this timeout, so the training collectives keep the Trainer's
#: shorter ``ddp_timeout`` (30 min) for detecting a hung rank.
FINISH_TIMEOUT = dt.timedelta(hours=12)


def world_size() -> int:
    """Number of processes of this launch (``WORLD_SIZE``; 1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (``RANK``; 0 when not launched)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process tracks, writes and registers (rank 0, or no launcher)."""
    return rank() == 0


def _active() -> bool:
    return world_size() > 1 and dist.is_available() and dist.is_initialized()


def check_same_on_every_rank(name: str, digest: str) -> None:
    """Raise unless every rank computed the same ``digest`` (a no-op in one process).

    Every rank must train on the same windows in the same order: the Trainer gives rank r
    batches r, r + N, ... of that order, so a rank with other data would train on a mix
    nobody chose, silently.

    Args:
        name: what the digest is of, for the message (e.g. ``"training windows"``).
        digest: a hash of it on this rank.

    Raises:
        InvalidInputError: some rank's digest differs from rank 0's.
    """
    if not _active():
        return
    digests: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    differing = [r for r, d in enumerate(digests) if d != digests[0]]
    if differing:
        raise InvalidInputError(
            "data.dataset_dir",
            f"the {name} of ranks {differing} differ from rank 0's; every process must read "
            "the same dataset (same path or an identical copy on each node) and config",
        )


def finish_group() -> Any:
    """Create the group that :func:`finish` waits on; call it on every rank at a point
    all ranks reach together (right after training). Returns None in one process."""
    if not _active():
        return None
    return dist.new_group(backend="gloo", timeout=FINISH_TIMEOUT)


def finish(group: Any) -> None:
    """Wait until every rank has arrived, then shut the process group down.

    Rank 0 arrives after logging and registering; the other ranks wait here (up to
    :data:`FINISH_TIMEOUT`) so that all exit together. A rank that fails does not arrive:
    it exits non-zero and the launcher stops the others.

    Args:
        group: what :func:`finish_group` returned (None: nothing to do).
    """
    if group is None or not _active():
        return
    logger.info("rank %d of %d done; waiting for the other ranks", rank(), world_size())
    dist.barrier(group=group)
    dist.destroy_process_group()
