"""The ``imr-outcome predict`` and ``imr-outcome score`` commands and how a prediction is printed.

Registered on the app in ``cli.py`` (as ``cli_serve.py``'s ``serve`` is). Models, torch and
the batch scorer are imported inside the commands, so ``imr-outcome --help`` stays quick.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from imr_outcome.console import console, err_console

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
    """What scoring runs on (see ``imr_outcome.model.onnx_runtime``)."""

    auto = "auto"
    torch = "torch"
    onnx = "onnx"


BACKEND_HELP = (
    "Scoring backend: auto (of torch and the ONNX variants that passed parity, the one "
    "timed fastest at registration on a CPU like this one), torch or onnx. Evidence always "
    "runs on torch."
)
BackendOption = Annotated[Backend, typer.Option("--backend", help=BACKEND_HELP)]
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

    label = f"label {prediction.label} at threshold {prediction.threshold:.3f}"
    verdict = f"[bold]{escape(prediction.headline)}[/]"
    if prediction.band is None:  # a model saved without a decision rule
        verdict += f"\n  P(Overturned) {prediction.p_overturned:.3f}; {label}"
    else:
        verdict += (
            f"\n  {prediction.relative_risk:.1f}\N{MULTIPLICATION SIGN} the usual rate "
            f"({escape(prediction.band_reason)}); {label}"
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


def _print_record(prediction: Any) -> None:
    """The outcome rates and similar past decisions of one prediction, in words."""
    from rich.text import Text

    if prediction.rate_summary:
        console.print(f"  record: {prediction.rate_summary}")
    for decision in prediction.similar:
        when = decision.decision_date or decision.year or "date unknown"
        console.print(
            f"  similar: {decision.case_number} ({when}) {decision.request!r}: "
            f"{decision.outcome}, similarity {decision.similarity:.2f}"
        )
        if decision.rationale_excerpt:
            console.print(Text(f"    why: {decision.rationale_excerpt}"))


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
    metadata: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata",
            help="Pre-filing metadata as FIELD=VALUE, repeatable (e.g. patient_age=44, "
            "patient_sex=Female).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    no_evidence: Annotated[
        bool, typer.Option("--no-evidence", help="Skip evidence spans (faster).")
    ] = False,
    top_k: Annotated[int, typer.Option(min=1, help="Evidence spans per direction.")] = 5,
    similar: Annotated[
        bool,
        typer.Option(
            "--similar",
            help="Also show the outcome rates of this kind of request and the 5 most "
            "similar past decisions (with the start of each decision's rationale).",
        ),
    ] = False,
    backend: BackendOption = Backend.auto,
) -> None:
    """Predict Upheld / Overturned for a letter's items or one request + summary."""
    from imr_outcome.errors import InvalidInputError
    from imr_outcome.model.defaults import SIMILAR_K
    from imr_outcome.model.scoring import check_record
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
    own_letter: str | None = None
    if letter is not None:
        from imr_outcome.data.letters import parse_letter_file
        from imr_outcome.data.model_input import prefiling_metadata

        parsed = parse_letter_file(letter)
        own_letter = parsed.case_number.value if parsed.case_number else None
        letter_metadata = prefiling_metadata(parsed)
        for item in parsed.items:
            cases.append(
                (
                    PredictInput.of(
                        item.request.value, parsed.summary.value, letter_metadata, source="dwc"
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
        fields = _parse_metadata(metadata or [])
        checked = check_record({"request": request, "summary": summary, **fields})
        if isinstance(checked, str):
            field, _, reason = checked.partition(": ")
            raise InvalidInputError(field, reason)
        cases.append((checked, None))
    predictor = _load_predictor(model, backend)
    predictions = predictor.predict_batch(
        [case for case, _ in cases],
        explain=not no_evidence,
        top_k=top_k,
        similar_k=SIMILAR_K if similar else 0,
        exclude_groups=[own_letter] * len(cases),
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
        if similar:
            _print_record(prediction)
    if letter is not None:
        known = [(a, p.label) for (_, a), p in zip(cases, predictions, strict=True) if a]
        hits = sum(a == label for a, label in known)
        console.print(f"{hits} of {len(known)} predictions match the letter's decisions")


def _parse_metadata(values: list[str]) -> dict[str, str]:
    """``FIELD=VALUE`` options as a mapping (values are checked with the row checks)."""
    fields: dict[str, str] = {}
    for value in values:
        field, sep, text = value.partition("=")
        if not sep or not field.strip():
            err_console.print(f"[bold red]error:[/] --metadata {value!r}: expected FIELD=VALUE")
            raise typer.Exit(code=2)
        fields[field.strip()] = text
    from imr_outcome.data.schema import PREFILING_FIELDS

    unknown = sorted(set(fields) - set(PREFILING_FIELDS))
    if unknown:
        err_console.print(
            f"[bold red]error:[/] --metadata {', '.join(unknown)}: not a pre-filing field; "
            f"use one of {', '.join(PREFILING_FIELDS)}"
        )
        raise typer.Exit(code=2)
    return fields


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
