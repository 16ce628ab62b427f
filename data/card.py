"""The dataset card: counts, label balance, text lengths, folds, fingerprint, audit.

Written as JSON (for machines and MLflow) and Markdown (for people), after the
"Datasheets for Datasets" idea (Gebru et al., 2021): what is in the data, where it came
from, and what was checked. The card holds figures only, never case text.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from imr_outcome.data.dataset import DATASET_FORMAT_VERSION, BuiltDataset
from imr_outcome.data.dmhc_findings import FindingsStats
from imr_outcome.data.ingest import IngestReport
from imr_outcome.data.schema import LABELS

_PERCENTILES = (5, 25, 50, 75, 95)


#: The columns the card reads from each split.
_CARD_COLUMNS = (
    "label",
    "fold",
    "group_id",
    "fold_group",
    "summary",
    "request",
    "partial_authorization",
    "patient_age",
    "patient_sex",
    "age_range",
    "event_date",
    "time_split",
)

#: The metadata columns whose coverage the card counts.
_METADATA = ("patient_age", "patient_sex", "age_range", "event_date")


def _length_stats(words: list[int], chars: list[int]) -> dict[str, Any]:
    """Percentiles and maximum of text lengths in words and characters (zeros if none)."""
    words_array = np.array(words) if words else np.zeros(1)
    chars_array = np.array(chars) if chars else np.zeros(1)
    return {
        "words": {f"p{p}": int(np.percentile(words_array, p)) for p in _PERCENTILES}
        | {"max": int(words_array.max())},
        "chars": {f"p{p}": int(np.percentile(chars_array, p)) for p in _PERCENTILES}
        | {"max": int(chars_array.max())},
    }


def _split_card(batches: Iterable[pa.Table]) -> dict[str, Any]:
    """The card entry of one split from its rows (:data:`_CARD_COLUMNS`), batch by batch:
    per-row counts and lengths are kept, never the text."""
    counts: Counter[str] = Counter()
    folds: dict[str, dict[str, int]] = {}
    groups: set[str] = set()
    fold_groups: set[str] = set()
    lengths: dict[str, list[int]] = {
        name: [] for name in ("request_words", "request_chars", "summary_words", "summary_chars")
    }
    with_summary = partial = 0
    known = dict.fromkeys(_METADATA, 0)
    time_splits: Counter[str] = Counter()
    for batch in batches:
        labels = batch.column("label").to_pylist()
        counts.update(LABELS[i] for i in labels)
        for fold, label in zip(batch.column("fold").to_pylist(), labels, strict=True):
            entry = folds.setdefault(str(fold), {"items": 0, "Overturned": 0})
            entry["items"] += 1
            entry["Overturned"] += int(label == 1)
        groups.update(batch.column("group_id").to_pylist())
        fold_groups.update(batch.column("fold_group").to_pylist())
        for name in ("request", "summary"):
            texts = batch.column(name).to_pylist()
            lengths[f"{name}_words"].extend(len(text.split()) for text in texts)
            lengths[f"{name}_chars"].extend(len(text) for text in texts)
            if name == "summary":
                with_summary += sum(bool(text) for text in texts)
        partial += sum(batch.column("partial_authorization").to_pylist())
        for key in _METADATA:
            known[key] += batch.num_rows - batch.column(key).null_count
        time_splits.update(str(v) for v in batch.column("time_split").to_pylist())
    n = sum(counts.values())
    return {
        "items": n,
        "groups": len(groups),
        "with_summary": int(with_summary),
        "fold_groups": len(fold_groups),
        "labels": {label: counts.get(label, 0) for label in LABELS},
        "overturned_rate": round(counts.get("Overturned", 0) / n, 4) if n else None,
        "partial_authorizations": int(partial),
        "metadata_known": known,
        "request_length": _length_stats(lengths["request_words"], lengths["request_chars"]),
        "summary_length": _length_stats(lengths["summary_words"], lengths["summary_chars"]),
        "folds": dict(sorted(folds.items())),
        "time_split": dict(time_splits),
    }


def build_card(
    built: BuiltDataset,
    report: IngestReport,
    sources: list[str],
    dmhc_findings: FindingsStats | None = None,
) -> dict[str, Any]:
    """Assemble the dataset card as a JSON-ready dict.

    Args:
        built: the built dataset.
        report: what ingestion saw (files, failures, exclusions).
        sources: the source paths given to the build.
        dmhc_findings: the counts of the DMHC ``Findings`` split, summed over the DMHC
            files read (``DmhcLoadResult.findings``), or None when not collected.

    Returns:
        The card: ``fingerprint``, ``sources``, ``ingest``, ``excluded_rows_by_reason``,
        per-split ``splits`` (items, groups, items with a summary, label counts and
        Overturned rate, partial authorizations, metadata coverage, text-length
        percentiles in words and characters, per-fold counts, time-split counts),
        ``leakage_audit``, and ``dmhc_findings`` when given (rows kept, excluded by
        reason, sentences kept and dropped by label, background-word percentiles).
    """
    splits = {name: _split_card(built.batches(name, _CARD_COLUMNS)) for name in built.dataset}
    return {
        "format_version": DATASET_FORMAT_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "fingerprint": built.fingerprint,
        "config": {
            "n_folds": built.config.n_folds,
            "seed": built.config.seed,
            "time_split_cutoffs": {
                source: cutoff.isoformat()
                for source, cutoff in sorted(built.config.time_split_cutoffs.items())
            },
            "near_duplicate_threshold": built.config.near_duplicate_threshold,
        },
        "sources": sources,
        "ingest": {
            "files_read": report.files_read,
            "letters_parsed": report.letters_parsed,
            "failures": len(report.failures),
            "skipped_files": len(report.skipped),
            "excluded_table_rows": len(report.excluded_rows),
        },
        "excluded_rows_by_reason": dict(
            sorted(Counter(row["reason"] for row in report.excluded_rows).items())
        ),
        "splits": splits,
        "leakage_audit": {
            "outcome_language_findings": len(built.leakage),
            "near_duplicate_groups_merged": built.merged_groups,
            "groups_straddling_folds": 0,
            "passed": True,
        },
    } | ({"dmhc_findings": dmhc_findings.to_json()} if dmhc_findings is not None else {})


def render_markdown(card: dict[str, Any]) -> str:
    """Render the card as Markdown.

    Args:
        card: the dict from :func:`build_card`.

    Returns:
        Markdown text with a summary table per split.
    """
    lines = [
        "# Dataset card: imr-outcome itemized IMR decisions",
        "",
        f"- Fingerprint: `{card['fingerprint']}`",
        f"- Created: {card['created']} (format v{card['format_version']})",
        f"- Sources: {', '.join(f'`{s}`' for s in card['sources'])}",
        f"- Ingest: {card['ingest']['files_read']} files read, "
        f"{card['ingest']['letters_parsed']} letters parsed, "
        f"{card['ingest']['failures']} failed, {card['ingest']['skipped_files']} skipped, "
        f"{card['ingest']['excluded_table_rows']} table rows excluded",
        f"- Folds: {card['config']['n_folds']} (StratifiedGroupKFold, seed "
        f"{card['config']['seed']}); time split cutoffs: "
        f"{card['config']['time_split_cutoffs'] or 'none'}",
        "- Leakage audit: passed - "
        f"{card['leakage_audit']['outcome_language_findings']} outcome-language findings, "
        f"{card['leakage_audit']['near_duplicate_groups_merged']} near-duplicate groups merged, "
        f"{card['leakage_audit']['groups_straddling_folds']} groups straddling folds",
        "",
        "| split | items | groups | Upheld | Overturned | overturned rate | partial auth. "
        "| request words p50 | summary words p50 / p95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in card["splits"].items():
        lines.append(
            f"| {name} | {s['items']} | {s['groups']} | {s['labels']['Upheld']} "
            f"| {s['labels']['Overturned']} | {s['overturned_rate']} "
            f"| {s['partial_authorizations']} | {s['request_length']['words']['p50']} "
            f"| {s['summary_length']['words']['p50']} / {s['summary_length']['words']['p95']} |"
        )
    lines += _findings_markdown(card.get("dmhc_findings"))
    for name, s in card["splits"].items():
        lines += ["", f"## {name}: folds", "", "| fold | items | Overturned |", "|---|---|---|"]
        lines += [f"| {k} | {v['items']} | {v['Overturned']} |" for k, v in s["folds"].items()]
        known = ", ".join(f"{k} {v}/{s['items']}" for k, v in s["metadata_known"].items())
        lines += ["", f"Metadata known: {known}. Time split: {s['time_split']}."]
    return "\n".join(lines) + "\n"


def _findings_markdown(findings: dict[str, Any] | None) -> list[str]:
    """The DMHC Findings section of the Markdown card (empty when not collected)."""
    if not findings:
        return []
    words = findings["background_words"]
    lines = [
        "",
        "## dmhc: Findings split (background kept, reviewer reasoning dropped)",
        "",
        f"- Rows with Findings: {findings['rows_with_findings']}; kept "
        f"{findings['rows_kept']} ({findings['rows_request_only']} with the request "
        "sentence only)",
        f"- Sentences kept {findings['sentences_kept']}, dropped "
        f"{findings['sentences_dropped']}: "
        + ", ".join(f"{k} {v}" for k, v in findings["sentences_dropped_by_label"].items()),
        f"- Background words p5/p25/p50/p75/p95/max: {words['p5']}/{words['p25']}/"
        f"{words['p50']}/{words['p75']}/{words['p95']}/{words['max']}",
    ]
    lines += [f"- Excluded ({n}): {reason}" for reason, n in findings["rows_excluded"].items()]
    return lines


def write_card(card: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``card.json`` and ``card.md`` into ``out_dir``.

    Returns:
        The two paths, JSON first.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "card.json", out_dir / "card.md"
    json_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(card), encoding="utf-8")
    return json_path, md_path
