"""Schemathesis against the app's own OpenAPI schema, in-process (ASGI), with the API key.

For every operation, Hypothesis generates requests from the schema:

- schema-valid ones (positive mode) must get no 5xx, a documented status and body, and
  for the JSON operations a 2xx: the schema states every limit the server enforces
  (``minLength``, ``maxLength``, ``pattern``, ``minItems``/``maxItems``, the metadata keys
  and ranges), so a request it allows is never refused;
- schema-invalid ones (negative mode) must get no 5xx and a documented status.

The example count is bounded (:data:`MAX_EXAMPLES` per operation and mode) so that the
module stays within about a minute on 2 cores; the model is a tf-idf model, so a call
costs milliseconds and the time goes to generation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import schemathesis
from api_stub import train_tfidf
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from imr_outcome.serve.api import create_app
from imr_outcome.serve.api_limits import ServeSettings
from imr_outcome.serve.predictor import Predictor

#: Most generated requests per operation and mode (operations without parameters have
#: one possible request; those with a body are also fuzzed with schema-invalid bodies).
MAX_EXAMPLES = 40
KEY = "fuzz-key-0123456789abcdefghij"
#: Small limits, so that generated text reaches them.
SETTINGS = ServeSettings(model_uri="local", max_chars=2000, max_batch_items=3, api_key=KEY)
OPERATIONS = (
    "GET /healthz",
    "GET /readyz",
    "GET /v1/model",
    "POST /v1/predict",
    "POST /v1/predict/batch",
    "POST /v1/letters",
    "POST /v1/similar",
    "POST /v1/admin/reload",  # no body; 409 here (the app serves a folder: nothing to follow)
)
#: The operations with a body, also fuzzed with schema-invalid ones.
WITH_BODY = {"POST /v1/predict", "POST /v1/predict/batch", "POST /v1/letters", "POST /v1/similar"}
#: Operations whose every schema-valid request must be answered 2xx (a letter upload
#: also needs the bytes to be a letter, which no schema can say).
ACCEPTS_ALL_VALID = {
    "GET /healthz",
    "GET /readyz",
    "GET /v1/model",
    "POST /v1/predict",
    "POST /v1/similar",
}
ACCEPTS_ALL_VALID |= {"POST /v1/predict/batch"}
CASES = [(label, "positive") for label in OPERATIONS] + [
    (label, "negative") for label in OPERATIONS if label in WITH_BODY
]


@dataclass
class Tally:
    """Generated requests and the statuses they got, per operation and mode."""

    statuses: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)

    def add(self, label: str, mode: str, status: int) -> None:
        counts = self.statuses.setdefault((label, mode), {})
        counts[status] = counts.get(status, 0) + 1

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    """The schema of a ready app (tf-idf model, small limits, an API key)."""
    predictor = Predictor.load(str(train_tfidf(tmp_path_factory)))
    app = create_app(SETTINGS, loader=lambda s: predictor)
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    with asgi.get_client(cast(Any, app)) as client:  # the lifespan runs until the process ends
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    yield loaded


@pytest.fixture(scope="module")
def tally() -> Iterator[Tally]:
    found = Tally()
    yield found
    print(f"\nschemathesis: {found.total()} generated requests")
    for (label, mode), counts in sorted(found.statuses.items()):
        print(f"  {mode:8} {label:24} {dict(sorted(counts.items()))}")


def test_the_schema_has_the_operations_fuzzed(schema: schemathesis.BaseSchema) -> None:
    n_operations = sum(1 for _ in schema.get_all_operations())

    assert n_operations == len(OPERATIONS)
    assert all(schema.find_operation_by_label(label) for label in OPERATIONS)


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_generated_requests_get_no_server_error(
    schema: schemathesis.BaseSchema, tally: Tally, label: str, mode: str
) -> None:
    operation = schema.find_operation_by_label(label)
    assert operation is not None
    generation = schemathesis.GenerationMode(mode)
    checks: list[Any] = [not_a_server_error, status_code_conformance]
    if generation is schemathesis.GenerationMode.POSITIVE:
        checks.append(response_schema_conformance)
        if label in ACCEPTS_ALL_VALID:
            checks.append(positive_data_acceptance)

    @given(case=operation.as_strategy(generation_mode=generation))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=checks)
        tally.add(label, mode, response.status_code)

    run()
