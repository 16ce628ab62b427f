"""The ``imr-outcome`` command line (Typer + Rich). The CLI owns the console.

Exit codes: 0 success; 1 finished but some inputs failed (see the report it names);
2 bad input or a failed check (nothing, or nothing usable, was written).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from imr_outcome.cli_models import models_app
from imr_outcome.cli_predict import predict_command, score_command
from imr_outcome.cli_serve import serve_command
from imr_outcome.console import CliTyper, console, err_console

app = CliTyper(
    name="imr-outcome",
    help="Predict California IMR outcomes (Upheld / Overturned) with evidence.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = CliTyper(help="Parse letters and tables into an itemized dataset.")
download_app = CliTyper(help="Download public IMR data.")
app.add_typer(data_app, name="data")
data_app.add_typer(download_app, name="download")
app.command("serve")(serve_command)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress (INFO).")] = False,
) -> None:
    """Set up logging for every command: third-party logs and progress bars only with -v."""
    from imr_outcome.logs import quiet_libraries

    # `datasets` reads it on import (importing it here cost 0.5 s a call); a user's value wins.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    quiet_libraries(verbose)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )


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


def _parse_cutoffs(values: list[str]) -> dict[str, dt.date]:
    cutoffs: dict[str, dt.date] = {}
    for value in values:
        source, sep, date = value.rpartition("=")
        for name in [source] if sep else ["dwc", "dmhc"]:
            cutoffs[name] = dt.date.fromisoformat(date)
    return cutoffs


@data_app.command("build")
def data_build(
    sources: Annotated[
        list[Path], typer.Argument(help="Letter files (.pdf/.txt), DMHC tables (.csv), folders.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the dataset.")],
    folds: Annotated[int, typer.Option(help="Cross-validation folds per source.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for fold assignment.")] = 13,
    time_split_cutoff: Annotated[
        list[str] | None,
        typer.Option(
            help="SOURCE=YYYY-MM-DD (repeatable) or a bare date for every source: rows "
            "dated before it are time-split 'train', the rest 'test'."
        ),
    ] = None,
) -> None:
    """Build the itemized, leakage-audited dataset and print its card."""
    from imr_outcome.data.card import build_card, write_card
    from imr_outcome.data.dataset import BuildConfig
    from imr_outcome.data.dataset_build import DatasetBuilder
    from imr_outcome.data.ingest import IngestReport, iter_ingest

    try:
        cutoffs = _parse_cutoffs(time_split_cutoff or [])
    except ValueError as exc:
        err_console.print(
            f"[bold red]error:[/] --time-split-cutoff: expected [SOURCE=]YYYY-MM-DD ({exc})"
        )
        raise typer.Exit(code=2) from exc
    config = BuildConfig(n_folds=folds, seed=seed, time_split_cutoffs=cutoffs)
    report = IngestReport()
    report_path = out / "ingest_report.json"
    # Rows stream from the parsers to disk: memory stays flat in the number of letters.
    with tempfile.TemporaryDirectory(prefix="imr-build-") as work:
        builder = DatasetBuilder(config, Path(work))
        for parsed in iter_ingest(sources, report):
            builder.add(parsed.records)
        report.write(report_path)
        built = builder.finish(out)
    card = build_card(built, report, [str(s) for s in sources], dmhc_findings=report.dmhc_findings)
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

    parsed = parse_letter_file(letter)

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
        # One row per item with the columns `score` reads (id, request, summary): a user
        # builds a batch file from letters with this command (`jq` or pandas).
        "items": [
            {
                "id": f"{parsed.letter_id}-{n}",
                "request": item.request.value,
                "summary": parsed.summary.value,
                "decision": item.outcome.decision.value.value,
                "partial_authorization": item.partial_authorization,
                "original_request": value(item.original_request),
            }
            for n, item in enumerate(parsed.items, start=1)
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

        result = download(url or DMHC_EXPORT_URL, out, sha256=sha256, progress=progress)
    console.print(
        f"saved {result.path} ({result.bytes} bytes, sha256 {result.sha256}"
        f"{', resumed' if result.resumed else ''})"
    )


@download_app.command("dwc")
def download_dwc(
    out: Annotated[Path, typer.Option("--out", help="Folder for the letter PDFs.")] = Path(
        "artifacts/downloads/dwc-letters"
    ),
    case: Annotated[
        list[str] | None, typer.Option("--case", help="A case number, e.g. CM16-0213037.")
    ] = None,
    cases_file: Annotated[
        Path | None, typer.Option(help="A file of case numbers (lines or commas).")
    ] = None,
    decided_from: Annotated[
        str | None, typer.Option("--from", help="Decided on or after (YYYY-MM-DD).")
    ] = None,
    decided_to: Annotated[
        str | None, typer.Option("--to", help="Decided on or before (YYYY-MM-DD).")
    ] = None,
    search_url: Annotated[str | None, typer.Option(help="Override the DWC search URL.")] = None,
    delay: Annotated[float, typer.Option(help="Seconds between requests.")] = 2.0,
) -> None:
    """Download DWC IMR final determination letters (resumes; skips letters already saved)."""
    from imr_outcome.data import dwc_download as dwc

    report = dwc.download_dwc_letters(
        out,
        case_numbers=[
            *(case or []),
            *(dwc.read_case_numbers(cases_file) if cases_file else []),
        ],
        decided_from=dwc.parse_decision_date(decided_from, "--from") if decided_from else None,
        decided_to=dwc.parse_decision_date(decided_to, "--to") if decided_to else None,
        search_url=search_url or dwc.DWC_SEARCH_URL,
        delay_s=delay,
    )
    for number, reason in report.failed:
        err_console.print(f"[bold red]failed:[/] {number}: {escape(reason)}", soft_wrap=True)
    console.print(f"{out}: {report.summary()}", soft_wrap=True)
    if report.failed:
        raise typer.Exit(code=1)


app.add_typer(models_app, name="models")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="Run config (experiments/<name>.yaml).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field: section.field=value (repeatable)."),
]


def _load_run_config(config: Path | None, overrides: list[str] | None) -> Any:
    """Load the run config and print it, fully resolved, on stderr (it is also logged to
    the MLflow run as params and ``config.json``)."""
    import yaml

    from imr_outcome.model.hardware import cpu_flags, machine_precision
    from imr_outcome.train.config import load_config

    run_config = load_config(config, overrides)
    resolved = yaml.safe_dump(run_config.model_dump(mode="json"), sort_keys=False)
    err_console.print(f"[bold]config {run_config.name}[/] (resolved)", highlight=False)
    err_console.print(escape(resolved.rstrip()), highlight=False, soft_wrap=True)
    if run_config.runs_an_encoder:  # the scikit-learn kinds have no numeric precision
        precision = machine_precision(run_config.training.precision)
        err_console.print(
            f"precision: {run_config.training.precision} -> {precision} "
            f"(cpu: {cpu_flags().describe()})",
            highlight=False,
        )
    return run_config


def _print_evaluation(title: str, evaluation: Any) -> None:
    from imr_outcome.train.evaluate import HEADLINE_METRICS, format_interval

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("estimate [95% CI, by letter]", justify="right")
    for name in HEADLINE_METRICS:
        table.add_row(name, format_interval(evaluation.metrics[name]))
    m = evaluation.metrics
    table.add_row(
        "confusion (tn fp fn tp)", " ".join(str(int(m[k][0])) for k in ("tn", "fp", "fn", "tp"))
    )
    letters = evaluation.within_letter
    if letters.get("pairs"):
        table.add_row(
            f"within-letter concordance ({int(letters['pairs'])} pairs)",
            format_interval((letters["concordance"], letters["ci_low"], letters["ci_high"])),
        )
    console.print(table)
    console.print(
        f"{evaluation.n_items} items from {evaluation.n_groups} letters/cases, "
        f"{evaluation.n_overturned} Overturned"
    )


@app.command("train")
def train_command(
    config: ConfigOption = None,
    overrides: SetOption = None,
    register: Annotated[
        bool, typer.Option("--register", help="Register the model (first version: @champion).")
    ] = False,
    models_dir: Annotated[Path, typer.Option(help="Where model directories are written.")] = Path(
        "artifacts/models"
    ),
) -> None:
    """Train on the training folds, evaluate on the held-out fold, log to MLflow.

    Data-parallel under `torchrun --nproc_per_node N` or `accelerate launch
    --num_processes N`: rank 0 logs, writes and registers; the other ranks only train.
    """
    from imr_outcome.progress import training_progress
    from imr_outcome.train.distributed import is_main_process, rank
    from imr_outcome.train.run import train, train_worker

    run_config = _load_run_config(config, overrides)
    if not is_main_process():
        train_worker(run_config)
        err_console.print(f"rank {rank()}: training done; rank 0 logged the run")
        return
    with training_progress() as progress:
        result = train(
            run_config, models_dir=models_dir, register_model=register, callbacks=[progress]
        )
    _print_evaluation(
        f"{run_config.name}: held-out fold {run_config.data.holdout_fold} "
        f"(threshold {result.model.threshold:.3f})",
        result.evaluation,
    )
    console.print(f"model {result.model_dir} logged as {result.model_uri} (run {result.run_id})")
    if result.registration is not None:
        reg = result.registration
        role = "@champion" if reg.champion else "challenger (champion unchanged)"
        console.print(f"registered models:/{reg.name}/{reg.version} {role}")


@app.command("evaluate")
def evaluate_command(
    config: ConfigOption = None,
    overrides: SetOption = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Also write the figures as JSON here (experiments/reports/...)."),
    ] = None,
) -> None:
    """Repeated grouped cross-validation (evaluation.folds x evaluation.repeats)."""
    import time

    from imr_outcome.train.run import evaluate, write_report

    run_config = _load_run_config(config, overrides)
    started = time.perf_counter()
    result = evaluate(run_config)
    if report is not None:
        write_report(report, run_config, result, time.perf_counter() - started)
    _print_evaluation(
        f"{run_config.name}: {run_config.evaluation.folds}-fold x "
        f"{run_config.evaluation.repeats} grouped CV (fold means)",
        result.cv,
    )
    if result.time_split is not None:
        _print_evaluation(
            f"{run_config.name}: time split (train before the cutoff)", result.time_split
        )
    if (faithful := result.faithfulness) is not None:
        console.print(
            f"faithfulness of {run_config.explainer} on {faithful.n_items} held-out items "
            f"(ERASER AOPC): comprehensiveness {faithful.comprehensiveness:.3f} "
            f"(random {faithful.random_comprehensiveness:.3f}, ratio {faithful.ratio:.2f}), "
            f"sufficiency {faithful.sufficiency:.3f} (random {faithful.random_sufficiency:.3f})"
        )
    console.print(f"logged as run {result.run_id}")


@app.command("retrain")
def retrain_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(metavar="[SOURCES]...", help="New letter files or folders."),
    ] = None,
    sources: Annotated[
        list[Path] | None,
        typer.Option("--sources", "-s", help="New letter files or folders (repeatable)."),
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report the decision; change no registry entry.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if the rule fails (recorded).")
    ] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why --force was used; recorded in the version tags.")
    ] = None,
    models_dir: Annotated[Path, typer.Option(help="Where model directories are written.")] = Path(
        "artifacts/models"
    ),
    datasets_dir: Annotated[
        Path, typer.Option(help="Where the rebuilt dataset is written (dataset-<fingerprint>).")
    ] = Path("artifacts/datasets"),
) -> None:
    """Rebuild the data with new letters, train a challenger, promote it only if better.

    Champion and challenger are scored on the same held-out new letters; the rule in the
    config's `promotion` section decides; the decision, figures and reason go to the run
    and the challenger's registry tags. `@champion` moves only on a pass (or --force).
    """
    from imr_outcome.train.evaluate import format_interval
    from imr_outcome.train.promotion import describe_rule
    from imr_outcome.train.retrain import retrain

    given = [*(paths or []), *(sources or [])]
    if not given:
        err_console.print("[bold red]error:[/] --sources: give at least one file or folder")
        raise typer.Exit(code=2)
    if reason is not None and not force:
        err_console.print("[bold red]error:[/] --reason: only with --force")
        raise typer.Exit(code=2)
    run_config = _load_run_config(config, overrides)
    result = retrain(
        run_config,
        given,
        models_dir=models_dir,
        datasets_dir=datasets_dir,
        dry_run=dry_run,
        force=force,
        force_reason=reason,
    )
    c, champion = result.comparison, result.champion
    console.print(
        f"dataset {result.dataset_dir} (fingerprint {result.fingerprint[:12]}): "
        f"{len(result.new_letters)} new letters, {len(result.duplicate_letters)} already "
        f"known skipped, {result.failed_files} file(s) failed to parse"
    )
    table = Table(
        title=f"champion v{champion.version} vs challenger on {c.n_items} items from "
        f"{c.n_letters} held-out new letters ({c.n_overturned} Overturned)"
    )
    table.add_column("metric")
    table.add_column(f"champion v{champion.version}", justify="right")
    table.add_column("challenger", justify="right")
    for metric in ("auroc", "auprc", "ece", "brier", "f1_overturned"):
        table.add_row(
            metric,
            format_interval(result.champion_eval.metrics[metric]),
            format_interval(result.challenger_eval.metrics[metric]),
        )
    console.print(table)
    console.print(
        f"challenger trained on {result.train_letters} letters; AUROC delta "
        f"{c.auroc_delta:+.3f} (paired bootstrap p = {c.p_value:.3f}, {c.bootstrap} "
        f"resamples), ECE delta {c.ece_delta:+.3f}"
    )
    console.print(f"rule: {describe_rule(run_config.promotion)}")
    console.print(f"decision: [bold]{result.decision.outcome}[/] - {result.decision.reason}")
    name = run_config.tracking.model_name
    if result.challenger_version is None:
        console.print(f"dry run: nothing registered; @champion stays v{champion.version}")
    elif result.promoted:
        console.print(
            f"registered models:/{name}/{result.challenger_version}; "
            f"@champion v{champion.version} -> v{result.challenger_version}"
        )
    else:
        console.print(
            f"registered models:/{name}/{result.challenger_version} as challenger; "
            f"@champion stays v{champion.version}"
        )
    console.print(f"logged as run {result.run_id}")


app.command("predict")(predict_command)
app.command("score")(score_command)
