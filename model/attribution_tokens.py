"""Word-piece attributions of a transformer classifier: integrated gradients, gradient x
input, occlusion.

:func:`token_attributions` scores every request and summary word piece of an item by its
push on the Overturned-minus-Upheld logit margin, on the torch model (fp32, every window of
a chunked input), and maps it back to character offsets of the caller's strings. The
explainers of :mod:`imr_outcome.model.attribution` sum these into words and phrases. torch
and Captum are imported only when a method runs. Work is bounded by ``deadline`` (checked
between batches of windows, :func:`check_deadline`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import DeadlineExceededError, IncompatibleModelError, InvalidInputError
from imr_outcome.model.attribution_spans import Field, TokenAttribution
from imr_outcome.model.defaults import IG_STEPS

if TYPE_CHECKING:
    import torch

    from imr_outcome.model.transformer import TransformerClassifier

logger = logging.getLogger(__name__)


#: Rows (interpolation steps x windows) per forward/backward pass of integrated gradients;
#: bounds memory (e.g. 64 x 256 tokens of MiniLM-L6 is well under 1 GiB).
IG_BATCH_ROWS = 64

#: (absolute logits, fraction of the margin change): a window whose attributions miss
#: ``margin(x) - margin(baseline)`` by more than ``a + r * |change|`` logs a warning.
COMPLETENESS_TOLERANCE: tuple[float, float] = (0.05, 0.1)
#: Fewer quadrature points than this are a deliberate speed choice whose word ranking was
#: measured faithful (experiments/README.md), not an attempt at completeness: the check
#: is skipped for them.
COMPLETENESS_MIN_STEPS = 8

Method = Literal["integrated_gradients", "gradient_x_input", "occlusion"]

#: Content tokens hidden together by the occlusion explainer (one forward row per run).
OCCLUSION_TOKENS = 16


def check_deadline(deadline: float | None, what: str) -> None:
    """Raise when ``deadline`` (a :func:`time.monotonic` value) has passed.

    Raises:
        DeadlineExceededError: naming ``what`` was cut short.
    """
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceededError(f"{what}: the time budget ran out before it finished")


def check_positive(name: str, value: int) -> None:
    if value < 1:
        raise InvalidInputError(name, f"expected an integer >= 1, found {value}")


def _check_completeness(totals: npt.NDArray[Any], errors: npt.NDArray[Any], n_steps: int) -> None:
    """Warn when the attributions of a window miss its margin change by more than
    :data:`COMPLETENESS_TOLERANCE` (a sign that ``n_steps`` is too small for the model).

    Args:
        totals: shape ``(b,)``, summed attributions per window, in logits.
        errors: shape ``(b,)``, Captum's convergence delta: ``totals - (f(x) - f(baseline))``.
        n_steps: the quadrature points used.
    """
    changes = totals - errors
    absolute, relative = COMPLETENESS_TOLERANCE
    worst = np.abs(errors) - (absolute + relative * np.abs(changes))
    index = int(np.argmax(worst))
    logger.debug(
        "integrated gradients: %d windows, n_steps=%d, max |completeness error| %.3g",
        len(errors),
        n_steps,
        float(np.abs(errors).max()),
    )
    if worst[index] > 0:
        logger.warning(
            "integrated gradients did not converge with n_steps=%d: attributions miss the "
            "margin change of %.3g logits by %.3g; evidence weights are unreliable, raise n_steps",
            n_steps,
            float(changes[index]),
            float(errors[index]),
        )


def token_attributions(
    classifier: TransformerClassifier,
    model_input: ModelInput,
    n_steps: int = IG_STEPS,
    *,
    deadline: float | None = None,
    method: Method = "integrated_gradients",
) -> list[TokenAttribution]:
    """Attribution of every request and summary word piece to the logit margin.

    ``method`` picks how a window's tokens are scored (all three explain the
    Overturned-minus-Upheld logit margin):

    - ``integrated_gradients`` (Sundararajan et al. 2017, "Axiomatic Attribution for Deep
      Networks") integrates the gradient of the margin along the straight line from a
      baseline to the input in the word-embedding space (Captum
      ``LayerIntegratedGradients`` on ``model.get_input_embeddings()``, Gauss-Legendre
      quadrature with ``n_steps`` points; all steps of all windows of a batch go through
      the model together, ``internal_batch_size``), and multiplies by (input - baseline);
      the result is summed over the hidden dimension, one number per token. The baseline
      is the same window with every token replaced by [PAD] except the special tokens
      ([CLS], [SEP]), with the input's attention mask and token types. By completeness, a
      window's token attributions sum to ``margin(window) - margin(baseline)`` up to the
      quadrature error.
    - ``gradient_x_input`` (Shrikumar et al. 2016, "Not Just a Black Box"; Captum
      ``LayerGradientXActivation``): the gradient of the margin at the input times the
      word embedding, summed over the hidden dimension: one forward and backward pass.
    - ``occlusion`` (Zeiler & Fergus 2014; batched): each run of
      :data:`OCCLUSION_TOKENS` content tokens of a window is replaced by [PAD] and the
      margin drop is shared equally by the run's tokens; all occluded copies of all
      windows are scored in batched forward passes (no gradients).

    Every window of a chunked input is attributed (in fp32, no autocast, always on the
    torch model even when scoring uses ONNX Runtime); a token held by several windows gets
    the mean of its window attributions, matched by character offsets. Tokens of the
    metadata prefix are dropped.

    Args:
        classifier: a fitted transformer classifier.
        model_input: the item, from ``build_model_input``.
        n_steps: integrated-gradients quadrature points, >= 1 (ignored by the others); cost
            is about ``n_steps`` forward and backward passes per window.
        deadline: a :func:`time.monotonic` value checked before each batch of windows,
            or None for no limit.
        method: see above.

    Returns:
        One attribution per distinct (field, start, end) token stretch, request tokens
        first, then summary tokens, each in text order. Offsets index
        ``model_input.text[request_offset:]`` (field ``"request"``) or
        ``model_input.text_pair`` (``"summary"``); scores are in logit-margin units.

    Raises:
        InvalidInputError: ``n_steps < 1``, or an input the windows cannot hold (see
            :func:`imr_outcome.model.encoders.encode_windows`).
        IncompatibleModelError: a tokenizer without a pad token.
        sklearn.exceptions.NotFittedError: an unfitted classifier.
        DeadlineExceededError: ``deadline`` passed before the last batch of windows.
    """
    import torch

    from imr_outcome.model.encoders import collate

    check_positive("n_steps", n_steps)
    model, tokenizer, config = classifier.model, classifier.tokenizer, classifier.model_config
    if tokenizer.pad_token_id is None:
        raise IncompatibleModelError(
            f"tokenizer of {config.base_model!r} has no pad token; {method} needs one "
            "for its [PAD] baseline"
        )
    pad_id = int(tokenizer.pad_token_id)
    windows = classifier.encode([model_input])
    device = next(model.parameters()).device
    model.train(False)

    def margin(
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Overturned-minus-Upheld logit of each row, from token ids or word embeddings."""
        logits: torch.Tensor = model(
            input_ids=None if inputs_embeds is not None else input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
        ).logits.float()
        return logits[:, 1] - logits[:, 0]  # (rows,)

    offset = model_input.request_offset
    sums: dict[tuple[Field, int, int], float] = defaultdict(float)
    counts: dict[tuple[Field, int, int], int] = defaultdict(int)
    for first in range(0, len(windows), IG_BATCH_ROWS):
        check_deadline(deadline, method.replace("_", " "))
        chosen = range(first, min(first + IG_BATCH_ROWS, len(windows)))
        batch = collate([windows.features(w) for w in chosen], pad_id)
        input_ids = batch["input_ids"].to(device)  # (b, t)
        width = input_ids.shape[1]
        keep = torch.tensor(  # [CLS] and [SEP] stay in the baseline; padding is [PAD] anyway
            [
                [sequence is None for sequence in windows.sequence_ids[w]]
                + [False] * (width - len(windows.sequence_ids[w]))
                for w in chosen
            ],
            dtype=torch.bool,
            device=device,
        )
        extra = tuple(
            batch[key].to(device) for key in ("attention_mask", "token_type_ids") if key in batch
        )
        if method == "integrated_gradients":
            scores = _ig_scores(margin, model, input_ids, keep, extra, pad_id, n_steps)
        elif method == "gradient_x_input":
            scores = _gxi_scores(margin, model, input_ids, extra)
        else:
            scores = _occlusion_scores(margin, input_ids, keep, extra, pad_id)
        for row, window in enumerate(chosen):
            per_window: dict[tuple[Field, int, int], float] = defaultdict(float)
            for position, (sequence, (start, end)) in enumerate(
                zip(windows.sequence_ids[window], windows.offset_mapping[window], strict=True)
            ):
                if sequence is None or end <= start:
                    continue
                if sequence == 0:
                    if start < offset:
                        continue  # metadata prefix
                    key: tuple[Field, int, int] = ("request", start - offset, end - offset)
                else:
                    key = ("summary", start, end)
                per_window[key] += float(scores[row, position])
            for key, value in per_window.items():
                sums[key] += value
                counts[key] += 1
    order = {"request": 0, "summary": 1}
    return [
        TokenAttribution(field, start, end, sums[(field, start, end)] / counts[(field, start, end)])
        for field, start, end in sorted(sums, key=lambda key: (order[key[0]], key[1], key[2]))
    ]


def _ig_scores(
    margin: Callable[..., torch.Tensor],
    model: Any,
    input_ids: torch.Tensor,
    keep: torch.Tensor,
    extra: tuple[torch.Tensor, ...],
    pad_id: int,
    n_steps: int,
) -> npt.NDArray[np.float64]:
    """Integrated-gradients token scores ``(b, t)`` of a batch of windows.

    Integrates in the word-embedding space with Captum's ``IntegratedGradients`` on
    ``inputs_embeds`` (the same attribution as ``LayerIntegratedGradients`` on the
    embedding layer, without the two full forward passes that layer variant spends
    capturing the layer's input and baseline outputs).
    """
    import torch
    from captum.attr import IntegratedGradients

    embed = model.get_input_embeddings()
    baselines = torch.where(keep, input_ids, torch.full_like(input_ids, pad_id))
    with torch.no_grad():
        inputs_embeds, baseline_embeds = embed(input_ids), embed(baselines)  # (b, t, h)

    def from_embeddings(embeds: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return margin(None, *rest, inputs_embeds=embeds)

    integrated = IntegratedGradients(from_embeddings)
    rows = n_steps * input_ids.shape[0]  # all steps of all windows in one pass if they fit
    checked = n_steps >= COMPLETENESS_MIN_STEPS  # the check costs two more forward passes
    with torch.enable_grad():
        found = integrated.attribute(
            inputs_embeds,
            baselines=baseline_embeds,
            additional_forward_args=extra,
            n_steps=n_steps,
            internal_batch_size=min(rows, IG_BATCH_ROWS),
            return_convergence_delta=checked,
        )
    attributions, delta = found if checked else (found, None)
    scores: npt.NDArray[np.float64] = (
        attributions.detach().double().sum(dim=-1).cpu().numpy()
    )  # (b, t)
    if delta is not None:
        _check_completeness(scores.sum(axis=1), delta.detach().double().cpu().numpy(), n_steps)
    return scores


def _gxi_scores(
    margin: Callable[..., torch.Tensor],
    model: Any,
    input_ids: torch.Tensor,
    extra: tuple[torch.Tensor, ...],
) -> npt.NDArray[np.float64]:
    """Gradient x input token scores ``(b, t)`` on the word embeddings."""
    import torch
    from captum.attr import LayerGradientXActivation

    explainer = LayerGradientXActivation(margin, model.get_input_embeddings())
    with torch.enable_grad():
        attributions = explainer.attribute(input_ids, additional_forward_args=extra)
    scores: npt.NDArray[np.float64] = attributions.detach().double().sum(dim=-1).cpu().numpy()
    return scores


def _occlusion_scores(
    margin: Callable[..., torch.Tensor],
    input_ids: torch.Tensor,
    keep: torch.Tensor,
    extra: tuple[torch.Tensor, ...],
    pad_id: int,
) -> npt.NDArray[np.float64]:
    """Occlusion token scores ``(b, t)``: the margin drop when a run of
    :data:`OCCLUSION_TOKENS` content tokens is [PAD]ded, shared by its tokens."""
    import torch

    attention = extra[0]
    content = (~keep) & (attention > 0)  # (b, t): real, non-special tokens
    copies: list[tuple[int, torch.Tensor]] = []
    for row in range(input_ids.shape[0]):
        positions = torch.nonzero(content[row]).flatten()
        for first in range(0, len(positions), OCCLUSION_TOKENS):
            copies.append((row, positions[first : first + OCCLUSION_TOKENS]))
    scores = np.zeros(tuple(input_ids.shape), dtype=np.float64)
    with torch.no_grad():
        full = margin(input_ids, *extra).double().cpu().numpy()  # (b,)
        for first in range(0, len(copies), IG_BATCH_ROWS):
            part = copies[first : first + IG_BATCH_ROWS]
            rows = torch.tensor([row for row, _ in part], device=input_ids.device)
            ids = input_ids[rows].clone()
            for index, (_, positions) in enumerate(part):
                ids[index, positions] = pad_id
            occluded = margin(ids, *(tensor[rows] for tensor in extra)).double().cpu().numpy()
            for index, (row, positions) in enumerate(part):
                scores[row, positions.cpu().numpy()] = (full[row] - occluded[index]) / len(
                    positions
                )
    return scores
