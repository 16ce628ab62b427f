"""Render the cross-validation reports in experiments/reports/ as one Markdown table.

Usage: python experiments/cv_table.py [--reports DIR] [--oof DIR] [--readme experiments/README.md]
       python experiments/cv_table.py --best   # the config `make run` registers

Reads every ``*.json`` written by ``imr-outcome evaluate --report`` and replaces the
block between ``<!-- cv-table:start -->`` and ``<!-- cv-table:end -->`` in the README
(printing the table as well).

Columns beyond the metrics:

- **invariance**: mean |dP(Overturned)| over the held-out items a rewrite changed (first
  repeat), for house style (the larger of the two directions), the patient's sex and
  date formats (the larger of the two directions);
- **dAUROC vs best baseline**: AUROC(row) - AUROC(best baseline) on the pooled
  out-of-fold predictions of the first repeat (the same folds for every config), with a
  95% percentile interval from a paired bootstrap over letters (2000 resamples; Efron &
  Tibshirani 1993, ch. 16). The out-of-fold predictions are read from ``artifacts/oof``
  (written by ``evaluate --report``; never committed);
- **within-letter concordance**: over the letters with mixed outcomes, the share of
  (Overturned, Upheld) item pairs of one letter where the Overturned item scored higher
  (ties count half; all repeats pooled, letter-bootstrap 95% CI, ``evaluate``'s
  ``within_letter`` figures). 0.5 is a model that scores a letter's items alike;
- **commit**: the commit each report was measured at; a report whose code or configs
  differ from HEAD is dropped and its config listed as "not re-run";
- **bands**: how often "likely upheld" / "likely overturned" were right on held-out items
  (all repeats), with the number of items.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.metrics import average_precision_score, roc_auc_score

HERE = Path(__file__).resolve().parent
COLUMNS = ("auroc", "auprc", "ece", "brier")
START, END = "<!-- cv-table:start -->", "<!-- cv-table:end -->"
#: Configs that count as baselines for the paired comparison.
BASELINES = ("majority", "tfidf_lr", "frozen_minilm_lr")
#: Configs always listed; one without a report at the current commit is shown as not re-run
#: (the fine-tuned transformer's 5x5 CV takes hours on 2 CPU cores).
LISTED = ("default", "dmhc_metadata_lr", "frozen_minilm_lr", "majority", "tfidf_lr", "two_stage")
#: Reports kept from an earlier commit on purpose: a recipe that no longer exists at HEAD,
#: kept as the reference another row is compared with (its commit column says where).
KEPT = ("default_slow_recipe",)
N_BOOT = 2000


def _cell(interval: list[float]) -> str:
    point, low, high = interval
    return f"{point:.3f} [{low:.3f}, {high:.3f}]"


def _invariance(figures: dict[str, Any]) -> str:
    inv = figures.get("invariance") or {}

    def worst(*names: str) -> float | None:
        values = [inv.get(f"invariance.{n}.mean_abs_delta") for n in names]
        found = [v for v in values if v is not None and math.isfinite(v)]
        return max(found) if found else None

    parts = [
        worst("house_style_to_patient", "house_style_to_injured_worker"),
        worst("sex_swap"),
        worst("dates_to_long", "dates_to_numeric"),
    ]
    if all(p is None for p in parts):
        return "n/a"
    return " / ".join("-" if p is None else f"{p:.4f}" for p in parts)


def _concordance(figures: dict[str, Any]) -> str:
    found = figures.get("within_letter") or {}
    if not found or not math.isfinite(found.get("concordance", math.nan)):
        return "n/a"
    return (
        f"{found['concordance']:.3f} [{found['ci_low']:.3f}, {found['ci_high']:.3f}] "
        f"({int(found['pairs'])} pairs)"
    )


def _bands(figures: dict[str, Any]) -> str:
    bands = figures.get("bands") or {}
    cells = []
    for name, short in (("likely upheld", "up"), ("likely overturned", "ov")):
        record = bands.get(name) or {}
        n = int(record.get("n") or 0)
        accuracy = record.get("accuracy")
        cells.append(
            f"{short} {accuracy:.2f} (n={n})" if accuracy is not None else f"{short} - (n=0)"
        )
    return "; ".join(cells)


def _head_commit() -> str:
    """The checked-out commit (``""`` outside a git checkout)."""
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=HERE
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return found.stdout.strip()


#: What a model's figures depend on: the package below serving and the project file (plus
#: each report's own config); as ``imr_outcome.train.tracking.CODE_PATHSPECS``. serve/
#: cannot change them: the layers contract keeps train/ and below from importing it.
CODE_PATHS = ("core", "data", "model", "train", "pyproject.toml")


def _same_code(commit: str, config: str) -> bool:
    """Whether ``commit`` holds the same code and the same ``experiments/<config>.yaml`` as
    HEAD (later commits may touch tests, docs, this table or other configs)."""
    paths = [*CODE_PATHS, f"experiments/{config}.yaml"]
    try:
        found = subprocess.run(
            ["git", "diff", "--quiet", commit, "HEAD", "--", *paths], cwd=HERE.parent
        )
    except OSError:
        return False
    return found.returncode == 0


def _oof(oof_dir: Path, config: str) -> dict[str, Any] | None:
    path = oof_dir / f"{config}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def paired_difference(
    reference: dict[str, Any], other: dict[str, Any], n_boot: int = N_BOOT, seed: int = 13
) -> tuple[float, float, float] | None:
    """AUROC(other) - AUROC(reference) and a 95% paired cluster-bootstrap interval.

    Items are matched by id; letters (``groups``) are resampled with replacement.
    """
    p_ref = dict(zip(reference["ids"], reference["p_overturned"], strict=True))
    ids = [i for i in other["ids"] if i in p_ref]
    if not ids:
        return None
    index = {i: k for k, i in enumerate(other["ids"])}
    y = np.asarray([other["labels"][index[i]] for i in ids])
    a = np.asarray([p_ref[i] for i in ids])
    b = np.asarray([other["p_overturned"][index[i]] for i in ids])
    groups = np.asarray([other["groups"][index[i]] for i in ids])
    if len(np.unique(y)) < 2:
        return None
    delta = float(roc_auc_score(y, b) - roc_auc_score(y, a))
    letters, codes = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(codes == g) for g in range(len(letters))]
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n_boot):
        pick = np.concatenate([members[g] for g in rng.integers(0, len(letters), len(letters))])
        if len(np.unique(y[pick])) < 2:
            continue
        deltas.append(roc_auc_score(y[pick], b[pick]) - roc_auc_score(y[pick], a[pick]))
    low, high = np.percentile(deltas, [2.5, 97.5])
    return delta, float(low), float(high)


def _rows(report: dict[str, Any], difference: str) -> list[str]:
    rows = []
    for setting in ("cv", "time_split"):
        figures = report.get(setting)
        if not figures:
            continue
        label = (
            f"{report['folds']}x{report['repeats']} grouped CV" if setting == "cv" else "time split"
        )
        rows.append(
            f"| {report['config']} | {report['kind']} | {report['split']} | {label} "
            f"| {figures['n_items']} ({figures['n_overturned']} Ov.) | "
            + " | ".join(_cell(figures["metrics"][c]) for c in COLUMNS)
            + f" | {_invariance(figures)} | {difference if setting == 'cv' else ''} "
            + f"| {_concordance(figures) if setting == 'cv' else ''} "
            + f"| {_bands(figures)} | {report['wall_seconds'] / 60:.1f}"
            + f" | {report['git_commit'][:8]} |"
        )
    return rows


#: A candidate measured without refitting: the mean of two configs' calibrated out-of-fold
#: probabilities (same folds, first repeat), each item's from models that never saw it.
AVERAGED = ("tfidf_lr", "frozen_minilm_lr")


def _average_row(oof_dir: Path, best_oof: dict[str, Any] | None, best: str) -> list[str]:
    parts = [_oof(oof_dir, config) for config in AVERAGED]
    if any(part is None for part in parts):
        return []
    first, second = parts
    assert first is not None and second is not None
    p_second = dict(zip(second["ids"], second["p_overturned"], strict=True))
    mean = {
        **first,
        "p_overturned": [
            (p + p_second[i]) / 2 for i, p in zip(first["ids"], first["p_overturned"], strict=True)
        ],
    }
    y = np.asarray(mean["labels"])
    score = np.asarray(mean["p_overturned"])
    auroc = roc_auc_score(y, score)
    auprc = average_precision_score(y, score)
    difference = "n/a"
    if best_oof is not None:
        found = paired_difference(best_oof, mean)
        if found is not None:
            difference = "{:+.3f} [{:+.3f}, {:+.3f}]".format(*found)
    name = " + ".join(AVERAGED)
    return [
        f"| mean of {name} | average of calibrated P | dwc | 5x1 pooled out-of-fold "
        f"(derived, not refitted) | {len(y)} ({int(y.sum())} Ov.) | {auroc:.3f} (pooled) "
        f"| {auprc:.3f} (pooled) | | | | {difference} | | | | |"
    ]


def render(reports_dir: Path, oof_dir: Path) -> str:
    """The Markdown table of every report in ``reports_dir``, sorted by split then config."""
    reports = [json.loads(p.read_text()) for p in sorted(reports_dir.glob("*.json"))]
    head = _head_commit()
    stale = sorted(
        {
            r["config"]
            for r in reports
            if head and r["config"] not in KEPT and not _same_code(r["git_commit"], r["config"])
        }
    )
    reports = [r for r in reports if r["config"] not in stale]
    reports.sort(key=lambda r: (r["split"], r["config"]))
    baselines = [r for r in reports if r["config"] in BASELINES and r["split"] == "dwc"]
    best = max(baselines, key=lambda r: r["cv"]["metrics"]["auroc"][0], default=None)
    best_oof = _oof(oof_dir, best["config"]) if best else None
    header = (
        "| config | model | data | evaluation | items | AUROC | AUPRC | ECE | Brier "
        "| invariance mean abs dP: house style / sex / dates "
        f"| dAUROC vs {best['config'] if best else 'best baseline'} [95% CI] "
        "| within-letter concordance [95% CI] "
        "| band right on held-out (up / ov) | wall min | commit |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for report in reports:
        if best is not None and report is best:
            difference = "reference"
        elif report["split"] != "dwc" or best_oof is None:
            difference = "n/a"
        else:
            own = _oof(oof_dir, report["config"])
            found = paired_difference(best_oof, own) if own else None
            difference = "n/a" if found is None else "{:+.3f} [{:+.3f}, {:+.3f}]".format(*found)
        lines.extend(_rows(report, difference))
    lines.extend(_average_row(oof_dir, best_oof, best["config"] if best else ""))
    for config in sorted(set(LISTED) | set(stale)):
        if not any(r["config"] == config for r in reports):
            lines.append(f"| {config} | not re-run at {head[:8]} |" + " |" * 13)
    return "\n".join(lines)


#: Model fields that name pretrained weights.
ENCODER_FIELDS = ("base_model", "item_encoder")


def weights_here(config_path: Path) -> bool:
    """Whether every encoder the run config at ``config_path`` names loads on this machine
    without a network: the offline MiniLM, a local directory, or a hub name already in the
    Hugging Face cache (``huggingface_hub.try_to_load_from_cache``)."""
    from huggingface_hub import try_to_load_from_cache

    model = yaml.safe_load(config_path.read_text()).get("model", {})
    for field in ENCODER_FIELDS:
        name = model.get(field)
        if name is None or name.startswith("offline:") or Path(name).is_dir():
            continue
        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            return False
    return True


def best_config(reports_dir: Path) -> str:
    """The DWC config with the highest mean CV AUROC among the reports measured on the
    code at HEAD whose weights are on this machine (:func:`weights_here`): what ``make
    run`` registers; ``"default"`` when there is none."""
    head = _head_commit()
    current = [
        report
        for report in (json.loads(p.read_text()) for p in sorted(reports_dir.glob("*.json")))
        if report["split"] == "dwc"
        and report["config"] not in KEPT
        and (not head or _same_code(report["git_commit"], report["config"]))
        and weights_here(HERE / f"{report['config']}.yaml")
    ]
    if not current:
        return "default"
    return str(max(current, key=lambda r: r["cv"]["metrics"]["auroc"][0])["config"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=HERE / "reports")
    parser.add_argument("--oof", type=Path, default=HERE.parent / "artifacts" / "oof")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    parser.add_argument(
        "--best", action="store_true", help="print the config make run registers, and stop"
    )
    args = parser.parse_args()
    if args.best:
        print(best_config(args.reports))
        return
    table = render(args.reports, args.oof)
    print(table)
    text = args.readme.read_text(encoding="utf-8")
    block = f"{START}\n{table}\n{END}"
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    args.readme.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
