"""The ONNX Runtime backend: export, parity record, backend choice per CPU, fallback."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imr_outcome.data.model_input import build_model_input
from imr_outcome.errors import IncompatibleModelError, InvalidInputError, ModelNotFoundError
from imr_outcome.model.hardware import CpuFlags
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.onnx_runtime import (
    ONNX_FILES,
    PARITY_FILE,
    OnnxSession,
    open_session,
    preferred_variant,
)
from imr_outcome.model.settings import TrainingConfig, TransformerConfig
from imr_outcome.model.transformer import TransformerClassifier
from imr_outcome.train import onnx_export
from imr_outcome.train.fine_tune import TrainableTransformer
from imr_outcome.train.onnx_export import separated_rank_flips

from conftest import CPUS
from model_factory import (
    export_test_onnx,
    parity_items,
    save_transformer_model,
    write_untrained_transformer,
)

AVX2 = CpuFlags(avx2=True, avx512_bf16=False, amx=False, vnni=False)
VNNI = CpuFlags(avx2=True, avx512_bf16=False, amx=False, vnni=True)


@pytest.fixture(scope="module")
def exported(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained tiny transformer with both ONNX variants exported and checked."""
    model_dir = write_untrained_transformer(tiny_bert, tmp_path_factory.mktemp("onnx"))
    export_test_onnx(model_dir, variants=("fp32", "int8"), timed=True)
    return model_dir


def test_export_records_parity_on_the_held_out_items(exported: Path) -> None:
    record = json.loads((exported / "classifier" / PARITY_FILE).read_text())
    fp32 = next(entry for entry in record["variants"] if entry["variant"] == "fp32")
    inputs, labels = parity_items()

    assert fp32["passed"] is True
    assert fp32["n_items"] == len(inputs) == len(labels)
    assert 0.0 <= fp32["max_abs_dp"] <= onnx_export.MAX_ABS_DP
    # The untrained tiny model's scores are near-tied (within 1e-5): AUROC may swing on
    # them, so only pairs that torch separates are rank-checked.
    assert fp32["d_auroc_separated"] <= onnx_export.MAX_D_AUROC
    assert fp32["ece_onnx"] == pytest.approx(fp32["ece_torch"], abs=0.01)
    assert {entry["variant"] for entry in record["variants"]} == {"fp32", "int8"}


def test_onnx_scores_match_torch_scores_and_embeddings(exported: Path, cpu: str) -> None:
    inputs, _ = parity_items()
    record = json.loads((exported / "classifier" / PARITY_FILE).read_text())
    int8_passed = any(e["passed"] for e in record["variants"] if e["variant"] == "int8")
    expected = "onnx-int8" if cpu == "avx512-bf16-vnni" and int8_passed else "onnx-fp32"
    on_torch = OutcomeModel.load(exported, backend="torch")
    on_onnx = OutcomeModel.load(exported, backend="onnx")
    assert (on_torch.backend, on_onnx.backend) == ("torch", expected)

    torch_scores, onnx_scores = on_torch.score(inputs), on_onnx.score(inputs)
    tolerance = onnx_export.MAX_ABS_DP if expected == "onnx-int8" else 1e-4
    np.testing.assert_allclose(onnx_scores.proba, torch_scores.proba, atol=tolerance)
    np.testing.assert_array_equal(onnx_scores.windows, torch_scores.windows)
    assert onnx_scores.labels == torch_scores.labels
    classifiers = [on_torch.classifier, on_onnx.classifier]
    assert all(isinstance(c, TransformerClassifier) for c in classifiers)
    embeddings = [c.item_embeddings(inputs) for c in classifiers]  # type: ignore[attr-defined]
    np.testing.assert_allclose(embeddings[1], embeddings[0], atol=1e-4 if tolerance < 1e-3 else 0.1)


def test_torch_scores_are_the_same_on_every_cpu(
    exported: Path, fake_cpu: Callable[[str], None]
) -> None:
    # bf16 is for fine-tuning only: a model scores in fp32 wherever it is served, so the
    # near-tied scores of the tiny model come out bit-identical on both kinds of CPU.
    inputs, _ = parity_items()
    scores = {}
    for name, flags in CPUS.items():
        fake_cpu(flags)
        scores[name] = OutcomeModel.load(exported, backend="torch").score(inputs).proba
    np.testing.assert_array_equal(scores["avx2-only"], scores["avx512-bf16-vnni"])


def test_near_tied_scores_are_not_rank_checked_but_separated_pairs_are() -> None:
    labels = np.array([1, 0, 1, 0])
    near_tied = np.array([0.5, 0.5 + 1e-6, 0.5 + 2e-6, 0.5 - 1e-6])
    reversed_ties = near_tied[::-1].copy()
    assert separated_rank_flips(near_tied, reversed_ties, labels) == (0, 0.0)

    separated = np.array([0.9, 0.1, 0.8, 0.2])
    one_flip = np.array([0.9, 0.1, 0.05, 0.2])  # the second Overturned item falls below both
    assert separated_rank_flips(separated, one_flip, labels) == (2, 0.5)


def test_the_auroc_change_is_the_net_of_flips_both_ways() -> None:
    # Two (Overturned, Upheld) pairs 0.004 apart swap, one into order and one out of it:
    # AUROC is unchanged, so the check reads 0 where a count of flips read 2/4.
    labels = np.array([1, 0, 1, 0])
    torch_p = np.array([0.300, 0.304, 0.900, 0.896])
    onnx_p = np.array([0.306, 0.303, 0.895, 0.897])
    assert separated_rank_flips(torch_p, onnx_p, labels) == (2, 0.0)
    # A tie on the candidate is half a pair, as in AUROC.
    tied = np.array([0.304, 0.304, 0.900, 0.896])
    assert separated_rank_flips(torch_p, tied, labels) == (1, 0.125)


def test_a_bf16_trained_model_exports_from_its_saved_fp32_weights(
    tiny_bert: Path, tmp_path: Path
) -> None:
    # bf16 training wraps forward() in autocast; the tracer failed on that (issue 18).
    inputs, labels = parity_items()
    training = TrainingConfig(epochs=1, batch_size=4, windows_per_item=1, precision="bf16")
    config = TransformerConfig(base_model=str(tiny_bert), max_length=64, stride=16)
    classifier = TrainableTransformer(config, training).fit(inputs, labels)
    model_dir = save_transformer_model(classifier, tmp_path)

    (parity,) = export_test_onnx(model_dir)

    assert parity.passed, parity
    loaded = OutcomeModel.load(model_dir, backend="torch").classifier
    assert isinstance(loaded, TransformerClassifier)
    np.testing.assert_array_equal(loaded.logits(inputs), classifier.logits(inputs))


def test_the_int8_variant_is_traced_with_eager_attention_and_fp32_with_the_default(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = Path(shutil.copytree(exported, tmp_path / "model"))
    for name in (*ONNX_FILES.values(), PARITY_FILE):
        (model_dir / "classifier" / name).unlink(missing_ok=True)
    traced: list[str] = []
    real_export = onnx_export.export

    def spy(model: Any, uses_token_types: bool, path: Path) -> Path:
        traced.append(model.config._attn_implementation)
        return real_export(model, uses_token_types, path)

    monkeypatch.setattr(onnx_export, "export", spy)

    parities = export_test_onnx(model_dir, variants=("fp32", "int8"))

    assert [p.variant for p in parities] == ["fp32", "int8"]
    assert len(traced) == 2
    assert traced[0] != "eager"
    assert traced[1] == onnx_export.INT8_ATTENTION == "eager"
    assert all(p.passed for p in parities), parities


def test_the_export_times_torch_and_each_passing_variant(exported: Path) -> None:
    record = json.loads((exported / "classifier" / PARITY_FILE).read_text())
    passing = {entry["variant"] for entry in record["variants"] if entry["passed"]}

    assert record["timing"]["items"] == min(onnx_export.TIMING_ITEMS, len(parity_items()[0]))
    assert record["timing"]["ms_torch"] > 0
    assert set(record["timing"]["ms"]) == passing
    assert all(ms > 0 for ms in record["timing"]["ms"].values())


def _timed_copy(
    exported: Path, tmp_path: Path, exported_on: CpuFlags, ms: dict[str, float], int8_passed: bool
) -> Path:
    """A copy of the exported classifier whose record says fp32 and int8 (a copy of the
    fp32 graph, so it loads) were timed at ``ms`` (torch: 100 ms) on ``exported_on``."""
    directory = Path(shutil.copytree(exported / "classifier", tmp_path / "classifier"))
    (directory / ONNX_FILES["int8"]).write_bytes((directory / ONNX_FILES["fp32"]).read_bytes())
    record = json.loads((directory / PARITY_FILE).read_text())
    record["exported_on"] = exported_on.describe()
    record["variants"] = [
        {"variant": "fp32", "passed": True},
        {"variant": "int8", "passed": int8_passed},
    ]
    record["timing"] = {"items": 8, "ms_torch": 100.0, "ms": ms}
    (directory / PARITY_FILE).write_text(json.dumps(record))
    return directory


@pytest.mark.parametrize(
    ("ms", "int8_passed", "served"),
    [
        ({"fp32": 128.0, "int8": 50.0}, True, ONNX_FILES["int8"]),  # EPYC, int8 passing
        ({"fp32": 128.0, "int8": 50.0}, False, None),  # EPYC, int8 failing: torch, not fp32
        ({"fp32": 80.0, "int8": 90.0}, True, ONNX_FILES["fp32"]),
        ({"fp32": 100.0, "int8": 101.0}, True, None),  # no variant beat torch
    ],
    ids=["int8-fastest", "int8-failed-so-torch", "fp32-fastest", "torch-fastest"],
)
def test_auto_serves_the_variant_measured_fastest_on_a_cpu_like_the_export_machine(
    exported: Path,
    tmp_path: Path,
    ms: dict[str, float],
    int8_passed: bool,
    served: str | None,
) -> None:
    directory = _timed_copy(exported, tmp_path, VNNI, ms, int8_passed)

    session = open_session(directory, "auto", VNNI)

    assert (None if session is None else session.path.name) == served


@pytest.mark.parametrize("flags", [AVX2, VNNI], ids=["avx2-only", "vnni"])
def test_timings_from_another_cpu_or_an_onnx_request_keep_the_order_by_flags(
    exported: Path, tmp_path: Path, flags: CpuFlags
) -> None:
    # Torch was fastest on the export machine; on a CPU with other flags that says
    # nothing, and asking for ONNX outright gets it there too.
    other = VNNI if flags == AVX2 else AVX2
    slower = {"fp32": 150.0, "int8": 150.0}
    on_other = _timed_copy(exported, tmp_path / "other", other, slower, int8_passed=True)
    on_same = _timed_copy(exported, tmp_path / "same", flags, slower, int8_passed=True)
    by_flags = ONNX_FILES[preferred_variant(flags)]

    auto_elsewhere = open_session(on_other, "auto", flags)
    onnx_asked = open_session(on_same, "onnx", flags)

    assert auto_elsewhere is not None and auto_elsewhere.path.name == by_flags
    assert onnx_asked is not None and onnx_asked.path.name == by_flags
    assert open_session(on_same, "auto", flags) is None


def test_auto_picks_int8_only_with_int8_dot_products(exported: Path, tmp_path: Path) -> None:
    # Without timings (a model exported before they were recorded) the CPU's flags decide.
    directory = Path(shutil.copytree(exported / "classifier", tmp_path / "classifier"))
    record = json.loads((directory / PARITY_FILE).read_text())
    del record["timing"]
    (directory / PARITY_FILE).write_text(json.dumps(record))
    int8_passed = any(e["passed"] for e in record["variants"] if e["variant"] == "int8")

    assert preferred_variant(AVX2) == "fp32"
    assert preferred_variant(VNNI) == "int8"
    on_avx2 = open_session(directory, "auto", AVX2)
    on_vnni = open_session(directory, "auto", VNNI)
    assert on_avx2 is not None and on_avx2.path.name == ONNX_FILES["fp32"]
    assert on_vnni is not None
    assert on_vnni.path.name == ONNX_FILES["int8" if int8_passed else "fp32"]
    assert open_session(directory, "torch", VNNI) is None


def test_a_variant_that_fails_parity_is_dropped_and_onnx_falls_back_to_torch(
    exported: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model_dir = Path(shutil.copytree(exported, tmp_path / "model"))
    for name in (*ONNX_FILES.values(), PARITY_FILE):
        (model_dir / "classifier" / name).unlink(missing_ok=True)
    monkeypatch.setattr(onnx_export, "MAX_ABS_DP", -1.0)  # nothing can pass

    (parity,) = export_test_onnx(model_dir)

    assert not parity.passed
    assert not (model_dir / "classifier" / ONNX_FILES["fp32"]).exists()
    with caplog.at_level(logging.WARNING):
        model = OutcomeModel.load(model_dir, backend="onnx")
    assert model.backend == "torch"
    assert "no ONNX variant passed parity" in caplog.text


def test_a_model_without_an_export_scores_with_torch(tiny_bert: Path, tmp_path: Path) -> None:
    model_dir = write_untrained_transformer(tiny_bert, tmp_path)
    assert OutcomeModel.load(model_dir).backend == "torch"
    assert OutcomeModel.load(model_dir, backend="onnx").backend == "torch"


def test_a_model_served_on_onnx_reads_its_torch_network_only_when_torch_is_needed(
    exported: Path, tmp_path: Path
) -> None:
    # Scoring on ONNX Runtime needs the tokenizer and the session; the torch network (and
    # transformers' modeling code, ~1.5 s to import) is read for evidence or torch scoring.
    copy = tmp_path / "model"
    shutil.copytree(exported, copy)
    (copy / "classifier" / "model.safetensors").unlink()
    inputs, _ = parity_items()
    expected = OutcomeModel.load(exported, backend="onnx").predict_proba(inputs)

    on_onnx = OutcomeModel.load(copy, backend="onnx")
    assert on_onnx.backend.startswith("onnx-")
    np.testing.assert_array_equal(on_onnx.predict_proba(inputs), expected)
    request, summary = "Norco 10/325mg #60", "The injured worker reports low back pain."
    with pytest.raises((ModelNotFoundError, IncompatibleModelError)):
        on_onnx.explain(build_model_input(request, summary), request, summary)
    with pytest.raises((ModelNotFoundError, IncompatibleModelError), match=f"^{copy}"):
        OutcomeModel.load(copy, backend="torch")


def test_an_item_scores_the_same_on_int8_alone_or_in_a_batch(
    exported: Path, tmp_path: Path
) -> None:
    # Dynamic int8 scales activations by each batch's range: mixed batches made an item's
    # P(Overturned) depend on its neighbours (up to 0.007 on fold 0), so batches hold one
    # item's windows only.
    model = OutcomeModel.load(exported, backend="torch")
    classifier = model.classifier
    assert isinstance(classifier, TransformerClassifier)
    uses_types = "token_type_ids" in classifier.tokenizer.model_input_names
    int8 = onnx_export.export_int8(exported / "classifier", uses_types, tmp_path / "m.int8.onnx")
    classifier.session = OnnxSession(int8)
    assert model.backend == "onnx-int8"
    inputs, _ = parity_items()

    together = model.predict_proba(inputs)
    alone = np.vstack([model.predict_proba([model_input]) for model_input in inputs])

    np.testing.assert_array_equal(together, alone)


def test_an_unknown_backend_names_the_field_and_the_choices(exported: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"backend.*auto, torch, onnx.*'gpu'"):
        OutcomeModel.load(exported, backend="gpu")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_concurrent_scoring_threads_share_one_tokenizer(exported: Path, backend: str) -> None:
    # The fast tokenizer fails with "Already borrowed" when two threads call it at once
    # unguarded; `serve --max-in-flight 2+` runs model calls on several threads.
    model = OutcomeModel.load(exported, backend=backend)
    inputs, _ = parity_items()
    expected = model.predict_proba(inputs)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: model.predict_proba(inputs), range(24)))

    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_request_over_the_window_budget_is_cut_not_refused(
    exported: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = OutcomeModel.load(exported, backend=backend)
    request = " ".join(["lumbar physical therapy sessions"] * 40)  # ~160 tokens > 64
    item = build_model_input(request, "The patient improved after six visits.")
    short = build_model_input(request[:60], "The patient improved after six visits.")

    with caplog.at_level(logging.WARNING):
        scores = model.score([item, short])

    assert scores.proba.shape == (2, 2)
    assert scores.windows.tolist() == [1, 1]
    assert "request of item 0" in caplog.text and "item 1" not in caplog.text
    spans = model.explain(item, request, "The patient improved after six visits.", n_steps=2)
    assert all(span.end <= len(request) for span in spans if span.field == "request")
