"""The ``imr-outcome models`` commands: list the registered versions, set an alias by hand."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.table import Table

from imr_outcome.console import CliTyper, console

models_app = CliTyper(help="The MLflow model registry.")


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
