"""Render the cross-validation reports in experiments/reports/ as one Markdown table.

Usage: python experiments/cv_table.py [--reports DIR] [--readme experiments/README.md]

Reads every ``*.json`` written by ``imr-outcome evaluate --report`` and replaces the
block between ``<!-- cv-table:start -->`` and ``<!-- cv-table:end -->`` in the README
(printing the table as well).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
COLUMNS = ("auroc", "auprc", "ece", "brier")
START, END = "<!-- cv-table:start -->", "<!-- cv-table:end -->"


def _cell(interval: list[float]) -> str:
    point, low, high = interval
    return f"{point:.3f} [{low:.3f}, {high:.3f}]"


def _rows(report: dict[str, Any]) -> list[str]:
    rows = []
    for setting in ("cv", "time_split"):
        figures = report.get(setting)
        if not figures:
            continue
        label = (
            f"{report['folds']}x{report['repeats']} grouped CV" if setting == "cv" else "time split"
        )
        accuracy = figures.get("accuracy")
        rows.append(
            f"| {report['config']} | {report['kind']} | {report['split']} | {label} "
            f"| {figures['n_items']} ({figures['n_overturned']} Ov.) | "
            + " | ".join(_cell(figures["metrics"][c]) for c in COLUMNS)
            + f" | {accuracy:.3f} | {report['wall_seconds'] / 60:.1f}"
            + f" | {report['git_commit'][:8]} |"
        )
    return rows


def render(reports_dir: Path) -> str:
    """The Markdown table of every report in ``reports_dir``, sorted by split then config."""
    reports = [json.loads(p.read_text()) for p in sorted(reports_dir.glob("*.json"))]
    reports.sort(key=lambda r: (r["split"], r["config"]))
    header = (
        "| config | model | data | evaluation | items | AUROC | AUPRC | ECE | Brier "
        "| accuracy | wall min | commit |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    return "\n".join([header, *(row for r in reports for row in _rows(r))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=HERE / "reports")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    args = parser.parse_args()
    table = render(args.reports)
    print(table)
    text = args.readme.read_text(encoding="utf-8")
    block = f"{START}\n{table}\n{END}"
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    args.readme.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
