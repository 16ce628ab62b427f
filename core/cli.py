"""The ``imr-outcome`` command line (Typer + Rich). The CLI owns the console.

Exit codes: 0 success; 1 finished but some inputs failed (see the report it names);
2 bad input or a failed check (nothing, or nothing usable, was written).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from imr_outcome.errors import ImrOutcomeError

app = typer.Typer(
    name="imr-outcome",
    help="Predict California IMR outcomes (Upheld / Overturned) with evidence.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Parse letters and tables into an itemized dataset.")
download_app = typer.Typer(help="Download public IMR data.")
app.add_typer(data_app, name="data")
data_app.add_typer(download_app, name="download")

console = Console()
err_console = Console(stderr=True)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress (INFO).")] = False,
) -> None:
    """Set up logging for every command."""
    import datasets

    datasets.disable_progress_bars()
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )


def _fail(exc: ImrOutcomeError) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=2)


def _print_card(card: dict[str, Any]) -> None:
    table = Table(title=f"Dataset card - fingerprint {card['fingerprint'][:16]}...")
    for column in ("split", "items", "letters/cases", "Upheld", "Overturned", "rate", "partial"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for name, s in card["splits"].items():
        table.add_row(
            name,
            str(s["items"]),
            str(s["groups"]),
            str(s["labels"]["Upheld"]),
            str(s["labels"]["Overturned"]),
            f"{s['overturned_rate']:.3f}",
            str(s["partial_authorizations"]),
        )
    console.print(table)
    ingest, audit = card["ingest"], card["leakage_audit"]
    console.print(
        f"files read {ingest['files_read']}, letters parsed {ingest['letters_parsed']}, "
        f"failed {ingest['failures']}, skipped {ingest['skipped_files']}, "
        f"table rows excluded {ingest['excluded_table_rows']}"
    )
    console.print(
        f"leakage audit passed: {audit['outcome_language_findings']} outcome-language findings, "
        f"{audit['near_duplicate_groups_merged']} near-duplicate groups merged"
    )


@data_app.command("build")
def data_build(
    sources: Annotated[
        list[Path], typer.Argument(help="Letter files (.pdf/.txt), DMHC tables (.csv), folders.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the dataset.")],
    folds: Annotated[int, typer.Option(help="Cross-validation folds per source.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for fold assignment.")] = 13,
    time_split_cutoff: Annotated[
        str | None,
        typer.Option(help="ISO date: rows assigned before it are time-split 'train'."),
    ] = None,
) -> None:
    """Build the itemized, leakage-audited dataset and print its card."""
    from imr_outcome.data.card import build_card, write_card
    from imr_outcome.data.dataset import BuildConfig, build_dataset, save_dataset
    from imr_outcome.data.ingest import ingest

    try:
        cutoff = dt.date.fromisoformat(time_split_cutoff) if time_split_cutoff else None
    except ValueError as exc:
        err_console.print(f"[bold red]error:[/] --time-split-cutoff: expected YYYY-MM-DD ({exc})")
        raise typer.Exit(code=2) from exc
    try:
        config = BuildConfig(n_folds=folds, seed=seed, time_split_cutoff=cutoff)
        report = ingest(sources)
        report_path = out / "ingest_report.json"
        report.write(report_path)
        built = build_dataset(report.records, config)
    except ImrOutcomeError as exc:
        raise _fail(exc) from exc
    save_dataset(built, out)
    card = build_card(built, report, [str(s) for s in sources])
    json_path, md_path = write_card(card, out)
    _print_card(card)
    console.print(f"wrote {out}/hf, {md_path.name}, {json_path.name}, {report_path.name}")
    if report.failures:
        err_console.print(f"[bold red]{len(report.failures)} file(s) failed[/]; see {report_path}:")
        for failure in report.failures:
            err_console.print(f"  {failure.source}: {failure.section}: {failure.reason}")
        raise typer.Exit(code=1)


@data_app.command("parse")
def data_parse(
    letter: Annotated[Path, typer.Argument(help="A letter (.pdf or .txt).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Parse one letter and show its header fields and items (not the rationales)."""
    from imr_outcome.data.letters import parse_letter_file

    try:
        parsed = parse_letter_file(letter)
    except ImrOutcomeError as exc:
        raise _fail(exc) from exc

    def value(field: Any) -> Any:
        return None if field is None else str(field.value)

    summary = {
        "letter_id": parsed.letter_id,
        "case_number": value(parsed.case_number),
        "date_assigned": value(parsed.date_assigned),
        "decision_date": value(parsed.decision_date),
        "ur_denial_date": value(parsed.ur_denial_date),
        "licensure_states": list(parsed.reviewer.licensure_states),
        "specialties": list(parsed.reviewer.specialties),
        "patient_age": parsed.patient_age.value if parsed.patient_age else None,
        "patient_sex": value(parsed.patient_sex),
        "injury_date": value(parsed.injury_date),
        "summary_words": len(parsed.summary.value.split()),
        "items": [
            {
                "request": item.request.value,
                "decision": item.outcome.decision.value.value,
                "partial_authorization": item.partial_authorization,
                "original_request": value(item.original_request),
            }
            for item in parsed.items
        ],
    }
    if as_json:
        console.print_json(json.dumps(summary))
        return
    table = Table(title=f"{parsed.letter_id}: {len(parsed.items)} item(s)")
    table.add_column("#", justify="right")
    table.add_column("request")
    table.add_column("decision")
    table.add_column("partial")
    for n, item in enumerate(summary["items"], start=1):
        table.add_row(str(n), item["request"], item["decision"], str(item["partial_authorization"]))
    console.print(table)


@download_app.command("dmhc")
def download_dmhc(
    out: Annotated[Path, typer.Option("--out", help="Where to save the CSV.")] = Path(
        "artifacts/downloads/dmhc-imr-determinations.csv"
    ),
    sha256: Annotated[
        str | None, typer.Option(help="Expected SHA-256 hex digest; verified when given.")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Override the CHHS portal URL.")] = None,
) -> None:
    """Download the DMHC IMR determinations export (resumes a partial download)."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from imr_outcome.data.download import DMHC_EXPORT_URL, download

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn()) as bar:
        task = bar.add_task("DMHC export", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = download(url or DMHC_EXPORT_URL, out, sha256=sha256, progress=progress)
        except ImrOutcomeError as exc:
            raise _fail(exc) from exc
    console.print(
        f"saved {result.path} ({result.bytes} bytes, sha256 {result.sha256}"
        f"{', resumed' if result.resumed else ''})"
    )
