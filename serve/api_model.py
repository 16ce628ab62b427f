"""What ``GET /v1/model`` reports: the loaded model, its alias and held-out metrics.

The registry is only read (never written): the alias comes from the URI the server was
started with (``models:/<name>@<alias>``) or, for ``models:/<name>/<version>``, from the
aliases that point at that version; metrics are the registered run's ``test.*`` values.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict

from imr_outcome.serve.api_limits import ServeSettings
from imr_outcome.serve.api_schemas import ModelCard
from imr_outcome.serve.predictor import Predictor

logger = logging.getLogger(__name__)

_ALIAS_RE = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
#: Prefix of the held-out metrics a registered run logs (see ``train.tracking``).
_TEST_PREFIX = "test."
#: Per-subgroup held-out metrics: too many for a headline, left out.
_SUBGROUP_PREFIX = "test.subgroup."


def alias_of(uri: str) -> tuple[str, str] | None:
    """``(name, alias)`` of a ``models:/<name>@<alias>`` URI; None for any other URI."""
    match = _ALIAS_RE.match(uri)
    return (match["name"], match["alias"]) if match else None


def _registry_facts(name: str, version: str) -> tuple[list[str], dict[str, float]]:
    """Aliases of ``name`` pointing at ``version`` and the version's run ``test.*`` metrics.

    Returns empty values when the tracking store cannot be read (logged at WARNING).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from imr_outcome.model.model_uri import default_tracking_uri

    tracking = default_tracking_uri()
    try:
        client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
        registered = client.get_registered_model(name)
        aliases = sorted(a for a, v in registered.aliases.items() if str(v) == version)
        run_id = client.get_model_version(name, version).run_id
        metrics = client.get_run(run_id).data.metrics if run_id else {}
    except MlflowException as exc:
        logger.warning("no registry facts for %s version %s: %s", name, version, exc)
        return [], {}
    headline = {
        k: float(v)
        for k, v in metrics.items()
        if k.startswith(_TEST_PREFIX) and not k.startswith(_SUBGROUP_PREFIX)
    }
    return aliases, headline


def describe_model(predictor: Predictor, settings: ServeSettings) -> ModelCard:
    """The model card of a loaded predictor.

    Args:
        predictor: the loaded predictor.
        settings: the server settings (its ``model_uri`` and limits).

    Returns:
        The card; ``alias`` and ``metrics`` come from the registry for registry versions
        (a numeric ``model_version``) and are None / empty otherwise.
    """
    info = asdict(predictor.model.info)
    followed = alias_of(settings.model_uri)
    alias = followed[1] if followed else None
    metrics: dict[str, float] = {}
    if predictor.model_version.isdigit():
        aliases, metrics = _registry_facts(predictor.model_name, predictor.model_version)
        alias = alias or (",".join(aliases) if aliases else None)
    return ModelCard(
        uri=settings.model_uri,
        name=predictor.model_name,
        version=predictor.model_version,
        alias=alias,
        kind=info["kind"],
        split=info["split"],
        base_model=info["base_model"],
        labels=list(info["labels"]),
        threshold=predictor.threshold,
        data_fingerprint=info["data_fingerprint"],
        created=info["created"],
        config_name=info["config_name"],
        explainer=info["explainer"],
        metrics=metrics,
        max_chars=settings.max_chars,
        max_batch_items=settings.max_batch_items,
    )
