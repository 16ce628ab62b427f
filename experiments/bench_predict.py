"""Benchmark: the inference ratios of issue 11 from one run, on this machine.

Usage:
    python experiments/bench_predict.py [--model models:/imr-outcome@champion]
        [--config experiments/default.yaml] [--dataset artifacts/dataset] [--threads 2]
        [--items 30] [--explain-items 5] [--batch-rows 120] [--parity-items 60] [--rounds 4]

``--model fresh:<encoder>`` (e.g. ``fresh:offline:minilm``) benchmarks the encoder with a
freshly initialised classification head (same shapes and cost as a fine-tuned one, no
training), saved to a temporary folder.

Items are real DWC items from the built dataset (nothing is copied into the repo): the
``--items`` items whose request + summary word count is closest to the median. The model
folder is copied to a temporary folder and exported to ONNX there (fp32, plus dynamic int8
on a VNNI/AMX CPU) with the parity check on ``--parity-items`` items of the config's
held-out fold, unless it already holds an export.

Printed, from this one run:

- forward p50 of torch fp32, torch bf16 autocast, ONNX Runtime fp32 and ORT dynamic int8 on
  the same tokenized windows, each as a ratio to torch fp32, with the CPU flags (issue 18);
  each backend timed in its own blocks, ``--rounds`` of them in alternating order;
  also the int8 graph quantised from the SDPA trace (what registration built before
  ``export_int8`` traced int8 with eager attention);
- bare forward: the torch forward passes alone of each item's windows (tokenized outside
  the timer), the floor the predictor is compared with;
- predict p50 per backend (torch fp32, ONNX Runtime), one :meth:`Predictor.predict` call
  per item, ``explain=False``, three warm-up calls first;
- evidence p50 per explainer on ``--explain-items`` items (on torch: gradients);
- batch: :func:`imr_outcome.serve.batch.score_file` of ``--batch-rows`` rows, items/s;
- peak RSS (``ru_maxrss``), the CPU flags, the precision and the backend ``auto`` picks;
- the ratios: predict ÷ bare forward, ONNX ÷ torch, evidence ÷ predict, items/s x predict.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imr_outcome.data.dataset import load_dataset
from imr_outcome.data.model_input import build_model_input
from imr_outcome.data.schema import PREFILING_FIELDS
from imr_outcome.model.artifact import ModelInfo
from imr_outcome.model.calibration import Calibrator
from imr_outcome.model.encoders import collate, encode_windows, resolve_base_model
from imr_outcome.model.hardware import cpu_flags, machine_precision
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.model_uri import resolve
from imr_outcome.model.onnx_runtime import ONNX_FILES, PARITY_FILE, OnnxSession
from imr_outcome.model.settings import TrainingConfig, TransformerConfig
from imr_outcome.model.transformer import TransformerClassifier, fit_requests
from imr_outcome.serve.batch import score_file
from imr_outcome.serve.predictor import Predictor
from imr_outcome.train.config import load_config
from imr_outcome.train.evaluate import holdout_split
from imr_outcome.train.onnx_export import (
    export,
    export_int8,
    export_with_parity,
    quantize,
    saved_network,
)
from imr_outcome.train.run import load_training_data

#: Explainers timed for evidence: (explainer, quadrature points).
EXPLAINERS: list[tuple[str, int]] = [
    ("integrated_gradients", 1),  # the default (ig_steps: 1)
    ("integrated_gradients", 16),
    ("gradient_x_input", 1),
    ("occlusion", 1),
]


def _median_items(dataset: Path, n: int) -> list[dict[str, Any]]:
    """The ``n`` DWC items whose request + summary word count is closest to the median."""
    split = load_dataset(dataset)["dwc"]
    rows = [
        {
            "request": row["request"],
            "summary": row["summary"],
            "metadata": {k: row[k] for k in PREFILING_FIELDS if row[k] is not None},
        }
        for row in split
    ]
    lengths = np.array([len(f"{r['request']} {r['summary']}".split()) for r in rows])
    median = float(np.median(lengths))
    order = np.argsort(np.abs(lengths - median), kind="stable")[:n]
    print(
        f"items: {len(order)} of {len(rows)} DWC items nearest the median length "
        f"({median:.0f} words; these span {lengths[order].min()}-{lengths[order].max()})"
    )
    return [rows[i] for i in order]


def fresh_model(encoder: str, folder: Path, max_length: int = 256, stride: int = 64) -> Path:
    """``encoder`` with a fresh classification head (same shapes and cost as a fine-tuned
    one, no training), saved as a model directory under ``folder``."""
    settings = TransformerConfig(base_model=encoder, max_length=max_length, stride=stride)
    from transformers import AutoModelForSequenceClassification

    from imr_outcome.model.encoders import for_inference, load_tokenizer

    path = resolve_base_model(encoder)
    classifier = TransformerClassifier(settings, TrainingConfig(precision="fp32"))
    torch.manual_seed(0)
    classifier._model = for_inference(
        AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=2,
            id2label={0: "Upheld", 1: "Overturned"},
            label2id={"Upheld": 0, "Overturned": 1},
        )
    )
    classifier._tokenizer = load_tokenizer(path, settings.max_length)
    info = ModelInfo(
        kind="transformer",
        labels=("Upheld", "Overturned"),
        split="dwc",
        base_model=encoder,
        max_length=settings.max_length,
        data_fingerprint="fresh-head",
        trained_groups=0,
        config_name="fresh",
        explainer="integrated_gradients",
        created=ModelInfo.now(),
    )
    return OutcomeModel(classifier, Calibrator("none"), 0.5, info).save(folder / "model")


def _p50(seconds: list[float]) -> float:
    return float(np.percentile(np.array(seconds) * 1000, 50))


def _timed(run: Callable[[dict[str, Any]], object], items: list[dict[str, Any]]) -> list[float]:
    seconds = []
    for item in items:
        started = time.perf_counter()
        run(item)
        seconds.append(time.perf_counter() - started)
    return seconds


def _bare_forward(model: OutcomeModel, items: list[dict[str, Any]]) -> list[float]:
    """The torch forward passes of each item's windows alone (one batch per item)."""
    classifier = model.classifier
    assert isinstance(classifier, TransformerClassifier)
    network = classifier.model
    batches = _item_batches(model, items)
    seconds = []
    network.train(False)  # as scoring does: no dropout, SDPA's fused path
    with torch.no_grad():
        for batch in batches[:2] + batches:  # two warm-up passes
            started = time.perf_counter()
            network(**batch)
            seconds.append(time.perf_counter() - started)
    return seconds[2:]


def _item_batches(model: OutcomeModel, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each item's windows as one padded batch, tokenized once (outside every timer)."""
    classifier = model.classifier
    assert isinstance(classifier, TransformerClassifier)
    config, tokenizer = classifier.model_config, classifier.tokenizer
    batches = []
    for item in items:
        inputs = [build_model_input(item["request"], item["summary"], item["metadata"])]
        inputs = fit_requests(tokenizer, inputs, config.max_length, config.stride)
        windows = encode_windows(tokenizer, inputs, config.max_length, config.stride)
        batches.append(collate([windows.features(w) for w in range(len(windows))], 0))
    return batches


#: Untimed passes before each backend's timed block, and the pause after them (lets the
#: other runtimes' spinning worker threads go idle).
WARM_UP_BATCHES = 3
SETTLE_SECONDS = 0.5


def _backend_forwards(
    model_dir: Path, items: list[dict[str, Any]], rounds: int = 4
) -> dict[str, float]:
    """Forward-pass p50 (ms) of torch fp32, torch bf16 autocast, ONNX Runtime fp32 and ORT
    dynamic int8 on the same tokenized windows (each item's windows one batch); the int8
    and fp32 graphs are exported here when the folder lacks them (not parity-gated: this
    times the backends, the registration check decides what serves).

    Each backend runs in a block over all batches (after :data:`WARM_UP_BATCHES` untimed
    ones and a :data:`SETTLE_SECONDS` pause), for ``rounds`` rounds whose order alternates
    (A B C D, then D C B A), and the p50 pools every round: drift in a shared machine's
    speed falls on all backends alike. Taking turns batch by batch (before stop 34) timed
    each backend while the thread pool of the one before still spun: on 2 cores, torch
    fp32's p50 read 125.6 ms in turns and 85.1 ms in blocks, in one probe run (EPYC: CPU
    avx2 avx512_bf16 avx512_vnni, no AMX); a server runs one backend."""
    model = OutcomeModel.load(model_dir, backend="torch")
    classifier = model.classifier
    assert isinstance(classifier, TransformerClassifier)
    batches = _item_batches(model, items)
    network = classifier.model
    network.train(False)
    directory = model_dir / "classifier"
    uses_types = "token_type_ids" in classifier.tokenizer.model_input_names
    fp32 = directory / ONNX_FILES["fp32"]
    if not fp32.is_file():
        export(saved_network(directory), uses_types, fp32)
    int8 = directory / ONNX_FILES["int8"]
    if not int8.is_file():
        export_int8(directory, uses_types, int8)
    # The int8 variant as it was built before export_int8: quantised from the SDPA trace.
    sdpa_int8 = quantize(fp32, Path(tempfile.mkdtemp(prefix="bench-sdpa-int8-")) / "int8.onnx")
    sessions = {
        "ORT fp32": OnnxSession(fp32),
        "ORT int8": OnnxSession(int8),
        "ORT int8 (SDPA trace)": OnnxSession(sdpa_int8),
    }

    def torch_forward(bf16: bool) -> Callable[[dict[str, Any]], object]:
        def forward(batch: dict[str, Any]) -> object:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return network(**batch)

        return forward

    backends: dict[str, Callable[[dict[str, Any]], object]] = {
        "torch fp32": torch_forward(False),
        "torch bf16": torch_forward(True),
        **{name: session.run for name, session in sessions.items()},
    }
    seconds: dict[str, list[float]] = {name: [] for name in backends}
    names = list(backends)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            forward = backends[name]
            for batch in batches[:WARM_UP_BATCHES]:
                forward(batch)
            time.sleep(SETTLE_SECONDS)
            for batch in batches:
                started = time.perf_counter()
                forward(batch)
                seconds[name].append(time.perf_counter() - started)
    return {name: _p50(values) for name, values in seconds.items()}


def _batch_rate(predictor: Predictor, items: list[dict[str, Any]], rows: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "pending.csv"
        with source.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "request", "summary", *PREFILING_FIELDS])
            for index in range(rows):
                item = items[index % len(items)]
                meta = [item["metadata"].get(field, "") for field in PREFILING_FIELDS]
                writer.writerow([f"row-{index}", item["request"], item["summary"], *meta])
        started = time.perf_counter()
        summary = score_file(
            source,
            Path(folder) / "scored.csv",
            predictor,
            metadata_columns={field: field for field in PREFILING_FIELDS},
        )
        wall = time.perf_counter() - started
    print(f"batch score_file ({predictor.model.backend}): {summary.scored} scored in {wall:.1f} s")
    return summary.scored / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/imr-outcome@champion")
    parser.add_argument("--config", type=Path, default=Path("experiments/default.yaml"))
    parser.add_argument("--dataset", type=Path, default=Path("artifacts/dataset"))
    parser.add_argument("--threads", type=int, default=2, help="torch / ORT intra-op threads")
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--explain-items", type=int, default=5)
    parser.add_argument("--batch-rows", type=int, default=120)
    parser.add_argument("--parity-items", type=int, default=60)
    parser.add_argument(
        "--rounds", type=int, default=4, help="timed blocks per backend, order alternating"
    )
    parser.add_argument(
        "--explainers",
        nargs="+",
        default=[f"{e}:{n}" for e, n in EXPLAINERS],
        help="explainer:steps pairs to time, e.g. integrated_gradients:8 gradient_x_input:1",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    items = _median_items(args.dataset, args.items)
    scratch = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    if args.model.startswith("fresh:"):
        config = load_config(args.config)
        assert isinstance(config.model, TransformerConfig)
        model_dir = fresh_model(
            args.model.removeprefix("fresh:"),
            scratch,
            config.model.max_length,
            config.model.stride,
        )
    else:
        model_dir = Path(shutil.copytree(resolve(args.model, None).directory, scratch / "model"))
        kind = OutcomeModel.load(model_dir).info.kind
        if kind != "transformer":
            # `make run` registers the config with the best CV, a scikit-learn kind at the
            # time of writing: these ratios are about the transformer backends.
            print(f"{args.model} is a {kind} model; benchmarking fresh:offline:minilm instead")
            config = load_config(args.config)
            assert isinstance(config.model, TransformerConfig)
            model_dir = fresh_model(
                "offline:minilm", scratch / "fresh", config.model.max_length, config.model.stride
            )
    if not (model_dir / "classifier" / PARITY_FILE).is_file():
        config = load_config(args.config, [f"data.dataset_dir={args.dataset}"])
        data = load_training_data(config)
        _, test = holdout_split(data.rows, data.folds, config.data.holdout_fold)
        n = min(args.parity_items, len(test))
        started = time.perf_counter()
        for parity in export_with_parity(
            OutcomeModel.load(model_dir, backend="torch"),
            model_dir,
            test.inputs[:n],
            test.labels[:n],
        ):
            print(f"parity ({time.perf_counter() - started:.0f} s): {parity}")

    flags = cpu_flags()
    on_torch = Predictor.load(str(model_dir), backend="torch")
    on_auto = Predictor.load(str(model_dir), backend="auto")
    on_onnx = Predictor.load(str(model_dir), backend="onnx")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; flags {flags.describe()}; torch {torch.__version__} "
        f"threads {torch.get_num_threads()}; precision auto -> {machine_precision('auto')}; "
        f"backend auto -> {on_auto.model.backend}"
    )

    def predict_with(predictor: Predictor, explain: bool) -> Callable[[dict[str, Any]], object]:
        def run(item: dict[str, Any]) -> object:
            return predictor.predict(
                item["request"], item["summary"], item["metadata"], explain=explain, source="dwc"
            )

        return run

    forwards = _backend_forwards(model_dir, items, args.rounds)
    print(f"forward p50 on the same windows ({len(items)} items; flags {flags.describe()}):")
    for name, value in forwards.items():
        print(f"  {name}: {value:.1f} ms ({value / forwards['torch fp32']:.2f}x torch fp32)")
    bare = _p50(_bare_forward(on_torch.model, items))
    p50: dict[str, float] = {}
    for name, predictor in (("torch", on_torch), (on_onnx.model.backend, on_onnx)):
        _timed(predict_with(predictor, False), items[:3])
        p50[name] = _p50(_timed(predict_with(predictor, False), items))
        print(f"predict p50 {name}: {p50[name]:.1f} ms (bare forward p50 {bare:.1f} ms)")
    auto_p50 = p50[on_auto.model.backend]

    evidence: dict[str, float] = {}
    explained = items[: args.explain_items]
    chosen = [(name, int(steps)) for name, _, steps in (e.rpartition(":") for e in args.explainers)]
    for explainer, steps in chosen:
        info = dataclasses.replace(on_auto.model.info, explainer=explainer, ig_steps=steps)
        on_auto.model.info = info
        on_auto.explain_steps = steps  # the predictor fixes its steps at load
        label = explainer if explainer != "integrated_gradients" else f"ig-{steps}"
        evidence[label] = _p50(_timed(predict_with(on_auto, True), explained))
        print(f"evidence p50 {label}: {evidence[label]:.0f} ms")

    rate = _batch_rate(on_auto, items, args.batch_rows)
    one_by_one = 1000.0 / auto_p50
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    onnx_name = on_onnx.model.backend
    print("\nratios (one run):")
    print(f"  predict p50 / bare forward p50 ({on_auto.model.backend}): {auto_p50 / bare:.2f}")
    print(f"  torch predict p50 / bare forward p50: {p50['torch'] / bare:.2f}")
    print(f"  {onnx_name} p50 / torch fp32 p50: {p50[onnx_name] / p50['torch']:.2f}")
    for label, value in evidence.items():
        print(f"  evidence p50 / predict p50, {label}: {value / auto_p50:.1f}")
    print(
        f"  batch items/s x predict p50: {rate * auto_p50 / 1000:.2f} ({rate:.1f} items/s, "
        f"one at a time {one_by_one:.1f}/s)"
    )
    print(f"  peak RSS: {peak:.0f} MiB")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
