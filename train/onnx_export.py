"""Export of the fine-tuned transformer to ONNX, with a parity check against torch.

At registration the classifier is exported with ``torch.onnx.export`` (the TorchScript
exporter, opset 17) to ``classifier/model.onnx``; on a CPU with int8 dot products (VNNI or
AMX, :func:`~imr_outcome.model.hardware.cpu_flags`) a dynamically quantised copy
``classifier/model.int8.onnx`` is written too (``onnxruntime.quantization.quantize_dynamic``,
int8 weights, activations quantised per batch), traced with eager attention
(:func:`export_int8`). The exported graph returns the window
logits and the mean-pooled last hidden state (what the OOD detector reads), so one
forward pass serves scoring and OOD as on torch.

The export reads the saved fp32 weights (``from_pretrained`` on ``classifier/``), never the
in-memory network that training left: bf16 training wraps its forward in autocast, and the
tracer fails on that ("ScalarType ComplexDouble is an unexpected tensor scalar type").

Parity is measured at export and written to ``classifier/onnx.json``: on the served torch
model (loaded from the saved directory) against ONNX Runtime, the largest
|ΔP(Overturned)| between torch (fp32) and ONNX (calibrated), AUROC and ECE of
both, and the ranking flips. A variant passes when max |ΔP| <= :data:`MAX_ABS_DP` and the
AUROC it computes on the (Overturned, Upheld) pairs whose torch scores differ by at least
:data:`RANK_MIN_GAP` moves by at most :data:`MAX_D_AUROC`. Near-tied scores (a tiny or
untrained model: all within 1e-5) swap order under any change of summation order, so
their ranks carry no information; the |ΔP| bound covers them. The AUROC change is the net
of the flips (pairs put in the wrong order minus pairs put right), not their count: once
every P moves by at most :data:`MAX_ABS_DP`, only pairs closer than twice that can swap,
and such swaps go both ways. A model whose ONNX file failed parity (or has none) runs on
torch, with a warning when ONNX was asked for.

Registration checks parity on the held-out fold and the training folds together
(:func:`export_for_registration`): parity compares two implementations of one function,
so every item tests it, and on the 89 held-out items alone (9 Overturned) one flipped pair
is 0.0014 of AUROC, so one or two pairs decided the gate (a 3-epoch MiniLM's int8 flipped
5 of 720 pairs one way and failed); on all 444 items a pair is 1/19,355.

Each passing variant and torch fp32 are then timed scoring the same items on the export
machine (:func:`time_scoring`, in blocks: one backend's runs together, best of
:data:`TIMING_REPEATS` after a warm-up), and the times go into ``onnx.json``: which backend
is fastest depends on the CPU (on an AMD EPYC with VNNI but no AMX, ORT int8 measured 0.50x
torch fp32 and ORT fp32 1.28x), so ``auto`` serves the measured fastest on a CPU with the
export machine's flags. Which variant a loaded model scores with, and the session that
runs it, are in :mod:`imr_outcome.model.onnx_runtime`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.hardware import cpu_flags
from imr_outcome.model.onnx_runtime import (
    ONNX_FILES,
    PARITY_FILE,
    OnnxSession,
    Variant,
    preferred_variant,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from imr_outcome.data.model_input import ModelInput
    from imr_outcome.model.model import OutcomeModel

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: ONNX opset of the export (ORT >= 1.14 runs it; LayerNorm is a single op from 17).
OPSET = 17
#: Parity limits: the largest change of a calibrated probability, and of AUROC.
MAX_ABS_DP = 0.01
MAX_D_AUROC = 0.005
#: Pairs whose torch probabilities differ by less than this count as tied in the rank check.
RANK_MIN_GAP = 1e-3
#: Items, and timed runs after one warm-up, of the export's timing of each backend.
TIMING_ITEMS = 16
TIMING_REPEATS = 3


@dataclass(frozen=True)
class Parity:
    """Torch vs ONNX Runtime on the same held-out items.

    Attributes:
        variant: ``"fp32"`` or ``"int8"``.
        n_items: items compared.
        max_abs_dp: largest |P_onnx - P_torch| of calibrated P(Overturned), in [0, 1].
        auroc_torch: AUROC of the torch probabilities (None with one class only).
        auroc_onnx: AUROC of the ONNX probabilities (None with one class only).
        ece_torch: expected calibration error (10 bins) of the torch probabilities.
        ece_onnx: the same for ONNX.
        rank_flips: (Overturned, Upheld) pairs at least :data:`RANK_MIN_GAP` apart on
            torch that ONNX orders the other way (or ties), either way.
        d_auroc_separated: the |AUROC change| those flips make, in [0, 1] (see
            :func:`separated_rank_flips`).
        passed: max_abs_dp <= :data:`MAX_ABS_DP` and d_auroc_separated <= :data:`MAX_D_AUROC`.
    """

    variant: str
    n_items: int
    max_abs_dp: float
    auroc_torch: float | None
    auroc_onnx: float | None
    ece_torch: float
    ece_onnx: float
    rank_flips: int
    d_auroc_separated: float
    passed: bool


def _wrapper(model: PreTrainedModel) -> torch.nn.Module:
    """The classifier as a module returning (window logits, mean-pooled last hidden)."""
    import torch

    class LogitsAndPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            output = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
                output_hidden_states=True,
            )
            mask = attention_mask.unsqueeze(-1).to(output.hidden_states[-1].dtype)
            pooled = (output.hidden_states[-1] * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            return output.logits, pooled

    return LogitsAndPooled()


def saved_network(directory: Path, attention: str | None = None) -> PreTrainedModel:
    """The sequence-classification network saved in ``directory``, fp32, in inference
    mode, read from local files (what :func:`export` should trace, whatever precision
    trained it).

    Args:
        directory: a folder written by ``save_pretrained``.
        attention: the attention implementation to trace (transformers'
            ``attn_implementation``: ``"eager"``, ``"sdpa"``); None keeps the default.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    extra: dict[str, Any] = {} if attention is None else {"attn_implementation": attention}
    network = AutoModelForSequenceClassification.from_pretrained(
        str(directory), local_files_only=True, dtype=torch.float32, **extra
    )
    network.train(False)
    return cast("PreTrainedModel", network)


def export(model: PreTrainedModel, uses_token_types: bool, path: Path) -> Path:
    """Export a sequence-classification model (fp32) to ONNX with dynamic batch and length.

    Args:
        model: the fine-tuned model (in inference mode, fp32).
        uses_token_types: whether the model takes ``token_type_ids`` (BERT yes, RoBERTa no).
        path: the ``.onnx`` file to write.

    Returns:
        ``path``. Inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids``), int64
        ``(batch, sequence)``; outputs ``logits`` ``(batch, 2)`` and ``pooled``
        ``(batch, hidden)``, float32.
    """
    import torch

    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if uses_token_types else [])
    dummy = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes |= {"logits": {0: "batch"}, "pooled": {0: "batch"}}
    model = cast(Any, model).float()
    model.train(False)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer's notes on Python branches in transformers' masking code and on
        # advanced indexing: the graph is checked against torch on held-out items at
        # export (export_with_parity), so they are noise in a user's console.
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        warnings.filterwarnings("ignore", message="Exporting aten::index", category=UserWarning)
        warnings.filterwarnings("ignore", message="Casting complex values to real")
        torch.onnx.export(
            _wrapper(model),
            dummy,
            str(path),
            input_names=names,
            output_names=["logits", "pooled"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def quantize(source: Path, target: Path) -> Path:
    """Dynamic int8 quantisation of ``source`` into ``target``
    (``onnxruntime.quantization.quantize_dynamic``): the MatMul weights int8 per output
    channel, activations quantised per batch at run time; embeddings, LayerNorm and the
    attention softmax stay fp32.

    Per-tensor quantisation of every op moved the fine-tuned MiniLM's P(Overturned) by up
    to 0.027 on the 89 held-out items of ``make run`` (9 rank flips: parity failed); MatMul
    per channel moved it by 0.0096 (2 flips: parity passed). ORT's shape pre-processing
    (``quant_pre_process``) changed neither figure, so it is skipped.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # ORT logs its advice to pre-process on the root logger at every call.
    advice = _DropMessage("Please consider to run pre-processing before quantization")
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
    finally:
        root.removeFilter(advice)
    return target


#: The attention implementation the int8 variant is traced from (see :func:`export_int8`).
INT8_ATTENTION = "eager"


def export_int8(directory: Path, uses_token_types: bool, target: Path) -> Path:
    """The int8 variant of the network saved in ``directory``, written to ``target``:
    traced with eager attention (:data:`INT8_ATTENTION`), then quantised by :func:`quantize`.

    The SDPA trace rebuilds the attention mask with ``Where`` nodes in every layer (684
    nodes for MiniLM-L6, against 531 traced eager); the same 38 MatMuls are quantised either
    way. ``experiments/bench_predict.py --model fresh:offline:minilm`` (30 median DWC items,
    2 threads, the backends in turns on the same windows) measured the eager trace's int8
    at 0.68x torch fp32 against 0.91x for the SDPA trace's (CPU avx2 avx512_bf16 avx512_vnni
    amx_bf16 amx_int8). The fp32 variant keeps the default trace, which was not slower.

    Returns:
        ``target``.
    """
    with tempfile.TemporaryDirectory() as scratch:
        traced = export(
            saved_network(directory, attention=INT8_ATTENTION),
            uses_token_types,
            Path(scratch) / "model.eager.onnx",
        )
        return quantize(traced, target)


def measure_parity(
    model: OutcomeModel,
    session: OnnxSession,
    variant: str,
    inputs: Sequence[ModelInput],
    labels: npt.NDArray[np.int64],
) -> Parity:
    """Compare the torch and ONNX calibrated probabilities of ``model`` on ``inputs``.

    Raises:
        InvalidInputError: no inputs, or ``labels`` of another length.
    """
    from sklearn.metrics import roc_auc_score

    from imr_outcome.train.metrics import expected_calibration_error

    if len(inputs) == 0 or len(labels) != len(inputs):
        raise InvalidInputError(
            "inputs", f"parity needs >= 1 labelled item, found {len(inputs)} / {len(labels)}"
        )
    classifier: Any = model.classifier
    previous = classifier.session
    try:
        classifier.session = None
        p_torch = model.predict_proba(inputs)[:, 1]
        classifier.session = session
        p_onnx = model.predict_proba(inputs)[:, 1]
    finally:
        classifier.session = previous
    both = len(set(labels.tolist())) == 2
    auroc_torch = float(roc_auc_score(labels, p_torch)) if both else None
    auroc_onnx = float(roc_auc_score(labels, p_onnx)) if both else None
    max_dp = float(np.max(np.abs(p_onnx - p_torch)))
    flips, d_auroc = separated_rank_flips(p_torch, p_onnx, labels)
    return Parity(
        variant=variant,
        n_items=len(inputs),
        max_abs_dp=max_dp,
        auroc_torch=auroc_torch,
        auroc_onnx=auroc_onnx,
        ece_torch=expected_calibration_error(labels, p_torch),
        ece_onnx=expected_calibration_error(labels, p_onnx),
        rank_flips=flips,
        d_auroc_separated=d_auroc,
        passed=max_dp <= MAX_ABS_DP and d_auroc <= MAX_D_AUROC,
    )


def separated_rank_flips(
    p_reference: FloatArray, p_candidate: FloatArray, labels: npt.NDArray[np.int64]
) -> tuple[int, float]:
    """Rank flips between two scorings among pairs the reference separates, and the AUROC
    change they make.

    Args:
        p_reference: reference P(Overturned), shape ``(n,)`` (torch fp32).
        p_candidate: the scores checked, shape ``(n,)`` (ONNX Runtime).
        labels: 0 (Upheld) / 1 (Overturned), shape ``(n,)``.

    Returns:
        ``(flips, d_auroc)``: the (Overturned, Upheld) pairs that the reference orders with
        a gap of at least :data:`RANK_MIN_GAP` and the candidate orders the other way or
        ties, and |AUROC(candidate) - AUROC(reference)| over those pairs, divided by all
        (Overturned, Upheld) pairs (AUROC's denominator; a tie scores 1/2, as in AUROC), in
        [0, 1]; 0.0 with one class only.
    """
    positive, negative = labels == 1, labels == 0
    gap_ref = p_reference[positive][:, None] - p_reference[negative][None, :]
    gap_new = p_candidate[positive][:, None] - p_candidate[negative][None, :]
    separated = np.abs(gap_ref) >= RANK_MIN_GAP
    flipped = separated & (np.sign(gap_new) != np.sign(gap_ref))
    if gap_ref.size == 0:
        return 0, 0.0
    # Each flipped pair adds (credit on the candidate - credit on the reference) to AUROC.
    credit_new = np.where(gap_new > 0, 1.0, np.where(gap_new == 0, 0.5, 0.0))
    credit_ref = (gap_ref > 0).astype(np.float64)
    change = float(np.sum((credit_new - credit_ref)[flipped]))
    return int(flipped.sum()), abs(change) / gap_ref.size


def time_scoring(
    model: OutcomeModel,
    session: OnnxSession | None,
    inputs: Sequence[ModelInput],
    repeats: int = TIMING_REPEATS,
) -> float:
    """Wall time of ``model.predict_proba(inputs)`` on one backend, in milliseconds.

    Args:
        model: a fine-tuned transformer model.
        session: the ONNX session to score with; None scores with torch.
        inputs: the items (tokenising them is part of the time, as when serving).
        repeats: timed runs after one untimed warm-up; the best is returned (the least
            disturbed by other work on the machine).
    """
    classifier: Any = model.classifier
    previous = classifier.session
    best = float("inf")
    try:
        classifier.session = session
        model.predict_proba(inputs)
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict_proba(inputs)
            best = min(best, time.perf_counter() - start)
    finally:
        classifier.session = previous
    return round(best * 1000.0, 3)


def export_with_parity(
    model: OutcomeModel,
    model_dir: Path,
    inputs: Sequence[ModelInput],
    labels: npt.NDArray[np.int64],
    *,
    variants: Sequence[Variant] | None = None,
) -> list[Parity]:
    """Export a saved transformer model to ONNX, check parity, time each passing variant
    against torch on the first :data:`TIMING_ITEMS` items, record it all (``onnx.json``).

    A no-op (returns ``[]``) for classifiers that are not fine-tuned transformers.

    Args:
        model: the model saved in ``model_dir``.
        model_dir: its directory (``classifier/`` receives the files).
        inputs: labelled items for the parity check (at registration the held-out fold,
            then the training folds).
        labels: their labels, shape ``(n,)``.
        variants: which to export; default fp32, plus int8 on a VNNI/AMX CPU.

    Returns:
        One :class:`Parity` per variant. A variant that fails keeps its record (and its
        file is removed), so loading falls back to torch with a warning.
    """
    from imr_outcome.model.transformer import TransformerClassifier

    classifier = model.classifier
    if not isinstance(classifier, TransformerClassifier) or len(inputs) == 0:
        return []
    directory = model_dir / "classifier"
    default: list[Variant] = ["fp32", "int8"] if preferred_variant() == "int8" else ["fp32"]
    chosen: list[Variant] = list(variants or default)
    uses_types = "token_type_ids" in classifier.tokenizer.model_input_names
    results: list[Parity] = []
    passing: dict[Variant, OnnxSession] = {}
    # Checked and timed on the model as serving loads it: the fitted one may score from
    # the training cache of lower-layer states (train/frozen_layers.py), which served torch
    # never has.
    from imr_outcome.model.model import OutcomeModel

    served = OutcomeModel.load(model_dir, backend="torch")
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = export(saved_network(directory), uses_types, Path(scratch) / ONNX_FILES["fp32"])
        for variant in chosen:
            target = directory / ONNX_FILES[variant]
            if variant == "int8":
                export_int8(directory, uses_types, target)
            else:
                target.write_bytes(fp32.read_bytes())
            session = OnnxSession(target)
            parity = measure_parity(served, session, variant, inputs, labels)
            results.append(parity)
            if parity.passed:
                passing[variant] = session
                logger.info("ONNX %s parity passed: %s", variant, parity)
            else:
                logger.warning(
                    "ONNX %s fails parity (max |dP| %.4f, AUROC %s vs %s); it will not be used",
                    variant,
                    parity.max_abs_dp,
                    parity.auroc_onnx,
                    parity.auroc_torch,
                )
                target.unlink()
    timing_inputs = list(inputs)[:TIMING_ITEMS]
    record = {
        "opset": OPSET,
        "limits": {"max_abs_dp": MAX_ABS_DP, "max_d_auroc": MAX_D_AUROC},
        "exported_on": cpu_flags().describe(),
        "variants": [asdict(parity) for parity in results],
        "timing": {
            "items": len(timing_inputs),
            "ms_torch": time_scoring(served, None, timing_inputs),
            "ms": {
                variant: time_scoring(served, session, timing_inputs)
                for variant, session in passing.items()
            },
        },
    }
    logger.info("scoring times at export (ms, %d items): %s", len(timing_inputs), record["timing"])
    (directory / PARITY_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return results


#: Items the registration parity check reads at most (bounds its cost; the DWC split's
#: 444 items fit).
PARITY_ITEMS = 512


def export_for_registration(
    model: OutcomeModel,
    model_dir: Path,
    inputs: Sequence[ModelInput],
    labels: npt.NDArray[np.int64],
) -> list[Parity]:
    """:func:`export_with_parity` on the first :data:`PARITY_ITEMS` of ``inputs`` (the
    held-out fold first, then the training folds), never failing the training run: an
    export error is logged and the model stays torch-only."""
    n = min(len(inputs), PARITY_ITEMS)
    try:
        return export_with_parity(model, model_dir, list(inputs)[:n], np.asarray(labels)[:n])
    except Exception as exc:  # an exporter gap must not lose the trained model
        logger.warning(
            "ONNX export failed (%s: %s); the model scores with torch", type(exc).__name__, exc
        )
        return []
