"""The ``imr-outcome`` command line (Typer + Rich). The CLI owns the console.

Exit codes: 0 success; 1 finished but some inputs failed (see the report it names);
2 bad input or a failed check (nothing, or nothing usable, was written).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

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
    """Set up logging for every command: third-party logs and progress bars (the
    "Loading weights" bar, pypdf's repair warnings) only with -v."""
    import datasets

    from imr_outcome.logs import quiet_libraries

    datasets.disable_progress_bars()
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
    from imr_outcome.data.dataset import BuildConfig, build_dataset, save_dataset
    from imr_outcome.data.ingest import ingest

    try:
        cutoffs = _parse_cutoffs(time_split_cutoff or [])
    except ValueError as exc:
        err_console.print(
            f"[bold red]error:[/] --time-split-cutoff: expected [SOURCE=]YYYY-MM-DD ({exc})"
        )
        raise typer.Exit(code=2) from exc
    config = BuildConfig(n_folds=folds, seed=seed, time_split_cutoffs=cutoffs)
    report = ingest(sources)
    report_path = out / "ingest_report.json"
    report.write(report_path)
    built = build_dataset(report.records, config)
    save_dataset(built, out)
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


models_app = CliTyper(help="The MLflow model registry.")
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

    from imr_outcome.train.config import load_config
    from imr_outcome.train.hardware import cpu_flags, machine_precision

    run_config = load_config(config, overrides)
    resolved = yaml.safe_dump(run_config.model_dump(mode="json"), sort_keys=False)
    precision = machine_precision(run_config.training.precision)
    err_console.print(f"[bold]config {run_config.name}[/] (resolved)", highlight=False)
    err_console.print(escape(resolved.rstrip()), highlight=False, soft_wrap=True)
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
    from imr_outcome.train.distributed import is_main_process, rank
    from imr_outcome.train.run import train, train_worker

    run_config = _load_run_config(config, overrides)
    if not is_main_process():
        train_worker(run_config)
        err_console.print(f"rank {rank()}: training done; rank 0 logged the run")
        return
    result = train(run_config, models_dir=models_dir, register_model=register)
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


@models_app.command("list")
def models_list(
    name: Annotated[str, typer.Option(help="Registered model name.")] = "imr-outcome",
) -> None:
    """Every registered version with its aliases, data fingerprint and headline metrics."""
    from imr_outcome.train.tracking import configure, list_versions

    configure("imr-outcome")
    rows = list_versions(name)
    if not rows:
        console.print(f"no registered versions of {name!r}")
        return
    table = Table(title=f"registered model {name}")
    columns = ["version", "aliases", "trained", "config", "data", "AUROC", "AUPRC", "ECE"]
    # the decision column only once `retrain` has recorded one (keeps 80 columns otherwise)
    decisions = any(row.get("decision") for row in rows)
    for column in [*columns, "retrain decision"] if decisions else columns:
        table.add_column(column)
    for row in rows:
        m = row["metrics"]
        created = dt.datetime.fromtimestamp(row["created"] / 1000, dt.UTC)
        if row.get("trained_at"):  # the model's own training time, when tagged
            created = dt.datetime.fromisoformat(row["trained_at"])
        table.add_row(
            row["version"],
            ", ".join(row["aliases"]),
            created.strftime("%Y-%m-%d %H:%M"),
            row["config"],
            row["data_fingerprint"][:12],
            *(f"{m[k]:.3f}" if k in m else "-" for k in ("test.auroc", "test.auprc", "test.ece")),
            *([row.get("decision") or "-"] if decisions else []),
        )
    console.print(table)


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to point the alias at.")],
    alias: Annotated[str, typer.Option(help="Alias to set.")] = "champion",
) -> None:
    """Set a registry alias by hand (default: champion)."""
    from imr_outcome.train.tracking import configure, set_alias

    configure("imr-outcome")
    set_alias(name, version, alias)
    console.print(f"models:/{name}@{alias} -> version {version}")


# ----------------------------------------------------------------------- predict, score

ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<run_id>/model, "
        "or a local model directory.",
    ),
]


class Backend(StrEnum):
    """What scoring runs on (see ``imr_outcome.train.onnx_backend``)."""

    auto = "auto"
    torch = "torch"
    onnx = "onnx"


BackendOption = Annotated[
    Backend,
    typer.Option(
        "--backend",
        help="Scoring backend: auto (ONNX Runtime where the model has an export that passed "
        "parity, else torch), torch or onnx. Evidence always runs on torch.",
    ),
]
#: Rich styles of evidence spans, by the outcome they push toward.
EVIDENCE_STYLES = {"Overturned": "bold black on green3", "Upheld": "bold white on red3"}


def _load_predictor(model: str, backend: str = "auto") -> Any:
    from imr_outcome.serve.predictor import Predictor

    return Predictor.load(model, backend=str(backend))


def _highlighted(text: str, spans: list[Any], field: str) -> Any:
    """``text`` with the evidence spans of ``field`` styled by direction."""
    from rich.text import Text

    rendered = Text(text)
    for span in spans:
        if span.field == field:
            rendered.stylize(EVIDENCE_STYLES[span.direction], span.start, span.end)
    return rendered


def _print_prediction(
    number: int, request: str, summary: str, prediction: Any, actual: str | None
) -> None:
    from rich.markup import escape
    from rich.panel import Panel
    from rich.text import Text

    verdict = (
        f"[bold]{prediction.label}[/] P(Overturned)={prediction.p_overturned:.3f} "
        f"(threshold {prediction.threshold:.3f})"
    )
    if prediction.band is not None:  # models saved with a decision rule
        verdict = (
            f"[bold]{prediction.band}[/]: P(Overturned) {prediction.p_overturned:.0%}, "
            f"{prediction.relative_risk:.1f}\N{MULTIPLICATION SIGN} the usual rate of "
            f"{prediction.base_rate:.0%} "
            f"({escape(prediction.band_reason)}); label {prediction.label}"
        )
        if prediction.band_accuracy is not None:
            verdict += (
                f"\n  on held-out letters this band was right {prediction.band_accuracy:.0%} "
                f"of the time (n={prediction.band_support})"
            )
    if actual is not None:
        mark = "[green]match[/]" if actual == prediction.label else "[red]miss[/]"
        verdict += f"  actual: [bold]{actual}[/] {mark}"
    console.print(Panel(_highlighted(request, prediction.evidence, "request"), title=f"#{number}"))
    console.print(verdict)
    for warning in prediction.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    if any(span.field == "summary" for span in prediction.evidence):
        console.print(_highlighted(summary, prediction.evidence, "summary"))
    for span in prediction.evidence:
        console.print(
            f"  toward [{EVIDENCE_STYLES[span.direction]}]{span.direction}[/] "
            f"{span.weight:.3f} {span.field}:",
            Text(repr(span.text)),
        )


@app.command("predict")
def predict_command(
    model: ModelOption = "models:/imr-outcome@champion",
    letter: Annotated[
        Path | None,
        typer.Option(
            help="A letter (.pdf/.txt): predict each disputed item from its request "
            "and case summary; shows the letter's decisions beside the predictions."
        ),
    ] = None,
    request: Annotated[str | None, typer.Option(help="The disputed request.")] = None,
    summary: Annotated[str | None, typer.Option(help="The case summary text.")] = None,
    summary_file: Annotated[
        Path | None, typer.Option(help="Read the case summary from this UTF-8 file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    no_evidence: Annotated[
        bool, typer.Option("--no-evidence", help="Skip evidence spans (faster).")
    ] = False,
    top_k: Annotated[int, typer.Option(min=1, help="Evidence spans per direction.")] = 5,
    backend: BackendOption = Backend.auto,
) -> None:
    """Predict Upheld / Overturned for a letter's items or one request + summary."""
    from imr_outcome.errors import InvalidInputError
    from imr_outcome.serve.predictor import PredictInput

    if (letter is None) == (request is None):
        err_console.print("[bold red]error:[/] give either --letter FILE or --request TEXT")
        raise typer.Exit(code=2)
    if summary is not None and summary_file is not None:
        err_console.print("[bold red]error:[/] give --summary or --summary-file, not both")
        raise typer.Exit(code=2)
    if letter is not None and (summary is not None or summary_file is not None):
        err_console.print("[bold red]error:[/] --letter brings its own case summary")
        raise typer.Exit(code=2)
    cases: list[tuple[PredictInput, str | None]] = []
    if letter is not None:
        from imr_outcome.data.letters import parse_letter_file
        from imr_outcome.data.model_input import prefiling_metadata

        parsed = parse_letter_file(letter)
        metadata = prefiling_metadata(parsed)
        for item in parsed.items:
            cases.append(
                (
                    PredictInput.of(
                        item.request.value, parsed.summary.value, metadata, source="dwc"
                    ),
                    item.outcome.decision.value.value,
                )
            )
    else:
        if summary_file is not None:
            try:
                summary = summary_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInputError(
                    "--summary-file", f"cannot read {summary_file} ({exc})"
                ) from exc
        cases.append((PredictInput.of(request, summary or ""), None))
    predictor = _load_predictor(model, backend)
    predictions = predictor.predict_batch(
        [case for case, _ in cases], explain=not no_evidence, top_k=top_k
    )
    if as_json:
        payload = [
            {"item": n, "request": case.request, "actual": actual, **p.model_dump()}
            for n, ((case, actual), p) in enumerate(zip(cases, predictions, strict=True))
        ]
        console.print_json(json.dumps(payload))
        return
    legend = (
        ""
        if no_evidence
        else f"; evidence [{EVIDENCE_STYLES['Overturned']}] toward Overturned [/] "
        f"[{EVIDENCE_STYLES['Upheld']}] toward Upheld [/]"
    )
    console.print(
        f"model {predictions[0].model_name} version {predictions[0].model_version}{legend}"
    )
    for n, ((case, actual), prediction) in enumerate(zip(cases, predictions, strict=True), 1):
        _print_prediction(n, case.request, case.summary, prediction, actual)
    if letter is not None:
        known = [(a, p.label) for (_, a), p in zip(cases, predictions, strict=True) if a]
        hits = sum(a == label for a, label in known)
        console.print(f"{hits} of {len(known)} predictions match the letter's decisions")


def _parse_metadata_columns(values: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for value in values:
        field, sep, column = value.partition("=")
        if not sep or not field or not column:
            err_console.print(
                f"[bold red]error:[/] --metadata-column: expected FIELD=COLUMN, got {value!r}"
            )
            raise typer.Exit(code=2)
        mapping[field] = column
    return mapping


@app.command("score")
def score_command(
    input_path: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="Items to score: .csv (UTF-8, or cp1252/UTF-16, detected), .jsonl or "
            ".parquet; with --engine spark also a URI (s3a://...) or a table name.",
        ),
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out", help="Predictions file: .csv, .jsonl or .parquet (--engine spark: a URI)."
        ),
    ],
    model: ModelOption = "models:/imr-outcome@champion",
    backend: BackendOption = Backend.auto,
    id_column: Annotated[str, typer.Option(help="Column with unique row ids.")] = "id",
    request_column: Annotated[str, typer.Option(help="Column with the request.")] = "request",
    summary_column: Annotated[str, typer.Option(help="Column with the case summary.")] = "summary",
    metadata_column: Annotated[
        list[str] | None,
        typer.Option(
            help="Pre-filing metadata as FIELD=COLUMN, e.g. patient_age=age (repeatable). "
            "Columns already named like a field (patient_age, patient_sex, age_range, "
            "imr_type, diagnosis_category, diagnosis_subcategory) are used without it."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run into --out.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out.")
    ] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Add evidence spans (slower).")
    ] = False,
    chunk_size: Annotated[
        int, typer.Option(min=1, help="Rows per batch and per fsynced write.")
    ] = 1000,
    engine: Annotated[
        Literal["local", "spark"],
        typer.Option(help="local: this process; spark: a Spark job, Parquet out (pip .[spark])."),
    ] = "local",
    spark_master: Annotated[
        str | None, typer.Option(help="Spark master URL, e.g. local[2] (--engine spark).")
    ] = None,
    partition_by: Annotated[
        list[str] | None,
        typer.Option(help="Partition the Spark output by this column (repeatable)."),
    ] = None,
) -> None:
    """Score a file of items; every row gets a prediction or an error in --out.

    Columns named like pre-filing fields (patient_age, patient_sex, ...) are read and
    validated as metadata without --metadata-column. An empty input exits 2.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from imr_outcome.serve.batch import score_file

    class RateColumn(ProgressColumn):
        """Items per second."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("- items/s" if speed is None else f"{speed:.1f} items/s")

    metadata = _parse_metadata_columns(metadata_column or [])
    if engine == "spark":  # INPUT may also be a table name of the Spark session
        from imr_outcome.serve.spark import score_with_spark

        done = score_with_spark(
            input_path, out, model, master=spark_master, partition_by=partition_by or [],
            resume=resume, explain=explain, overwrite=overwrite, id_column=id_column,
            request_column=request_column, summary_column=summary_column,
            metadata_columns=metadata, batch_size=chunk_size,
        )  # fmt: skip
        console.print(f"{done.total} rows: {done.scored} scored, {done.failed} failed -> {out}")
        if done.failed:
            err_console.print(f"[bold red]{done.failed} row(s) failed[/]; see the error column")
            raise typer.Exit(code=1)
        return
    predictor = _load_predictor(model, backend)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console) as bar:
        task = bar.add_task("scoring", total=None)
        started = False

        def progress(done: int, total: int | None) -> None:
            nonlocal started
            if not started:  # rows already in the output do not count toward the rate
                bar.reset(task, total=total, completed=done)
                started = True
            else:
                bar.update(task, completed=done)

        summary = score_file(
            input_path,
            out,
            predictor,
            id_column=id_column,
            request_column=request_column,
            summary_column=summary_column,
            metadata_columns=metadata,
            chunk_size=chunk_size,
            resume=resume,
            explain=explain,
            progress=progress,
            overwrite=overwrite,
        )
    failed = summary.failed + summary.failed_existing
    console.print(
        f"{summary.total} rows: {summary.scored} scored, {summary.failed} failed, "
        f"{summary.skipped_existing} already in the output "
        f"({summary.failed_existing} of them failed) -> {out}"
    )
    if failed:
        err_console.print(f"[bold red]{failed} row(s) failed[/]; see the error column of {out}")
        raise typer.Exit(code=1)
