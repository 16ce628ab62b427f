"""Invalid text (lone surrogates, no letters), metadata, upload papercuts, the favicon, and
an OpenAPI schema that states what the server enforces."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from api_stub import REQUEST, SUMMARY, error, train_tfidf, wait_ready
from fastapi.testclient import TestClient

from imr_outcome.data.schema import PREFILING_FIELDS
from imr_outcome.data.text_checks import LETTER_PATTERN
from imr_outcome.model.warnings import WARN_NO_SUMMARY
from imr_outcome.serve.api import create_app
from imr_outcome.serve.api_limits import ServeSettings
from imr_outcome.serve.api_schemas import Metadata
from imr_outcome.serve.predictor import Predictor

from conftest import LETTER_FIXTURES

LETTER = LETTER_FIXTURES / "mixed_multi.txt"
SETTINGS = ServeSettings(model_uri="local", max_chars=3000, max_batch_items=4)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return Predictor.load(str(train_tfidf(tmp_path_factory)))


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(create_app(SETTINGS, loader=lambda s: predictor)) as test_client:
        wait_ready(test_client)
        yield test_client


def _raw(client: TestClient, path: str, text: str) -> Any:
    """POST ``text`` as the body verbatim (it may hold escapes json.dumps would not write)."""
    return client.post(path, content=text.encode(), headers={"Content-Type": "application/json"})


# ------------------------------------------------------------------ lone surrogates

SURROGATES: dict[str, tuple[str, str, str]] = {
    "request": ('{"request": "\\ud800MRI"}', "/v1/predict", "request"),
    "summary": (
        '{"request": "MRI lumbar", "summary": "Pain \\udfff in the back"}',
        "/v1/predict",
        "summary",
    ),
    "batch item": (
        '{"items": [{"request": "MRI"}, {"request": "TENS \\udc00 unit"}]}',
        "/v1/predict/batch",
        "items[1].request",
    ),
    "metadata": (
        '{"request": "MRI", "metadata": {"patient_sex": "\\ud83d"}}',
        "/v1/predict",
        "metadata.patient_sex",
    ),
}


@pytest.mark.parametrize("case", sorted(SURROGATES))
def test_a_lone_surrogate_is_422_naming_the_field(client: TestClient, case: str) -> None:
    body, path, field = SURROGATES[case]

    response = _raw(client, path, body)

    found_field, message = error(response, 422)
    assert found_field == field
    assert re.match(r"holds an unpaired UTF-16 surrogate \(U\+D[89A-F][0-9A-F]{2}\) at ", message)
    assert message.endswith(
        "send valid Unicode (in JSON, a \\uD800-\\uDBFF escape must be followed by a "
        "\\uDC00-\\uDFFF escape)"
    )


def test_a_surrogate_pair_is_text(client: TestClient) -> None:
    response = _raw(client, "/v1/predict", '{"request": "MRI \\ud83d\\ude00 lumbar"}')

    assert response.status_code == 200, response.text


def test_a_surrogate_in_a_field_name_is_422_for_the_body(client: TestClient) -> None:
    response = _raw(client, "/v1/predict", '{"request": "MRI", "\\ud800x": 1}')

    assert response.status_code == 422
    (item,) = json.loads(response.content)["detail"]
    assert item["field"] == "body"
    assert item["message"].startswith("holds an unpaired UTF-16 surrogate (U+D800) at character 0")


# ------------------------------------------------------------------ no letters

NO_LETTERS: dict[str, tuple[dict[str, Any], str, str]] = {
    "empty request": ({"request": ""}, "request", "is empty; write it out in words"),
    "blank request": ({"request": " \t\n "}, "request", "is empty; write it out in words"),
    "control characters": (
        {"request": "\u0000\u0001\u0007"},
        "request",
        "has no letters (only digits, punctuation, symbols or control characters); "
        "write it out in words",
    ),
    "punctuation": ({"request": "?!... -- ##"}, "request", "has no letters"),
    "digits": ({"request": "MRI", "summary": "12/03/2015 4.5 #90"}, "summary", "has no letters"),
    "empty summary": ({"request": "MRI", "summary": ""}, "summary", "is empty"),
    "blank summary": ({"request": "MRI", "summary": "  \r\n"}, "summary", "is empty"),
}


@pytest.mark.parametrize("case", sorted(NO_LETTERS))
def test_text_without_letters_is_422_naming_the_field(client: TestClient, case: str) -> None:
    body, field, message = NO_LETTERS[case]

    found_field, found = error(client.post("/v1/predict", json=body), 422)

    assert (found_field, found[: len(message)]) == (field, message)


def test_a_batch_item_without_letters_is_named(client: TestClient) -> None:
    body = {"items": [{"request": REQUEST}, {"request": REQUEST, "summary": "..."}]}

    field, message = error(client.post("/v1/predict/batch", json=body), 422)

    assert field == "items[1].summary"
    assert message.startswith("has no letters")


@pytest.mark.parametrize(
    "request_text",
    ["MRI", "\u041d\u043e\u0440\u043a\u043e 10/325", "腰椎 MRI", "x"],
    ids=["short", "cyrillic", "cjk", "one letter"],
)
def test_any_text_with_a_letter_is_predicted(client: TestClient, request_text: str) -> None:
    response = client.post("/v1/predict", json={"request": request_text})

    assert response.status_code == 200, response.text


def test_a_summary_left_out_is_none_and_predicted(client: TestClient) -> None:
    response = client.post("/v1/predict", json={"request": REQUEST})

    assert response.status_code == 200
    assert WARN_NO_SUMMARY in response.json()["warnings"]
    assert response.json()["band_reason"] == "there is no case summary, only the request"


# ------------------------------------------------------------------------ metadata

METADATA: dict[str, tuple[dict[str, Any], str, str]] = {
    "post-filing field": (
        {"label": "Upheld"},
        "metadata.label",
        "not a pre-filing field; allowed: " + ", ".join(PREFILING_FIELDS),
    ),
    "age too high": ({"patient_age": 300}, "metadata.patient_age", "expected at most 120, got 300"),
    "age negative": ({"patient_age": -1}, "metadata.patient_age", "expected at least 0, got -1"),
    "age as text": ({"patient_age": "44"}, "metadata.patient_age", "expected a whole number"),
    "long text": (
        {"patient_sex": "f" * 201},
        "metadata.patient_sex",
        "longer than 200 characters; shorten it",
    ),
}


@pytest.mark.parametrize("case", sorted(METADATA))
def test_bad_metadata_is_422_naming_the_key(client: TestClient, case: str) -> None:
    metadata, field, message = METADATA[case]

    found = error(client.post("/v1/predict", json={"request": REQUEST, "metadata": metadata}), 422)

    assert (found[0], found[1][: len(message)]) == (field, message)


def test_metadata_fields_are_the_prefiling_fields() -> None:
    assert tuple(Metadata.model_fields) == PREFILING_FIELDS


def test_metadata_reaches_the_model(client: TestClient, predictor: Predictor) -> None:
    metadata = {"patient_age": 44, "patient_sex": "male", "imr_type": None}
    expected = predictor.predict(REQUEST, SUMMARY, {"patient_age": 44, "patient_sex": "male"})

    response = client.post(
        "/v1/predict", json={"request": REQUEST, "summary": SUMMARY, "metadata": metadata}
    )

    assert response.json()["p_overturned"] == pytest.approx(expected.p_overturned, abs=1e-12)


# ------------------------------------------------------------------------- uploads


def test_two_file_parts_are_422(client: TestClient) -> None:
    data = LETTER.read_bytes()

    response = client.post(
        "/v1/letters",
        files=[("file", ("a.txt", data, "text/plain")), ("file", ("b.txt", data, "text/plain"))],
    )

    assert error(response, 422) == ("file", "2 files were sent; upload one letter per request")


def test_a_part_without_a_file_name_gets_a_plain_message(client: TestClient) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename=""\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n\r\n--b--\r\n"
    )

    response = client.post(
        "/v1/letters", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )

    field, message = error(response, 422)
    assert field == "file"
    assert "/docs" not in message
    assert message == (
        "is required: no file was attached; upload the letter (.pdf or .txt) as the "
        "multipart/form-data field 'file'"
    )


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_letter_is_not_refused_as_binary(client: TestClient, encoding: str) -> None:
    data = LETTER.read_text(encoding="utf-8").encode(encoding)
    assert b"\x00" in data

    response = client.post("/v1/letters", files={"file": ("letter.txt", data, "text/plain")})

    assert response.status_code != 415, response.text


def test_a_utf16_letter_gives_the_same_items_as_utf8(client: TestClient) -> None:
    text = LETTER.read_text(encoding="utf-8")
    utf8 = client.post("/v1/letters", files={"file": ("a.txt", text.encode(), "text/plain")})

    utf16 = client.post(
        "/v1/letters", files={"file": ("a.txt", text.encode("utf-16"), "text/plain")}
    )

    assert utf16.status_code == 200, utf16.text
    assert utf16.json()["items"] == utf8.json()["items"]


def test_the_favicon_is_served_and_linked(client: TestClient) -> None:
    icon = client.get("/favicon.ico")
    svg = client.get("/favicon.svg")

    assert icon.status_code == svg.status_code == 200
    assert icon.headers["content-type"] == "image/svg+xml"
    assert icon.text.startswith("<svg") and icon.text == svg.text
    assert '<link rel="icon" href="/favicon.svg" type="image/svg+xml">' in client.get("/").text


# ------------------------------------------------------------------ the schema


def test_the_schema_states_the_limits_the_server_enforces(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]

    for name in ("PredictRequest", "BatchItem"):
        for text in ("request", "summary"):
            field = schemas[name]["properties"][text]
            assert (field["minLength"], field["maxLength"], field["pattern"]) == (
                1,
                3000,
                LETTER_PATTERN,
            ), (name, text)
    items = schemas["BatchRequest"]["properties"]["items"]
    assert (items["minItems"], items["maxItems"]) == (1, 4)
    assert schemas["PredictRequest"]["required"] == ["request"]
    metadata = schemas["Metadata"]
    assert metadata["additionalProperties"] is False
    assert set(metadata["properties"]) == set(PREFILING_FIELDS)
    age = metadata["properties"]["patient_age"]["anyOf"][0]
    assert (age["minimum"], age["maximum"]) == (0, 120)


def test_the_schema_limits_hold_at_their_edges(client: TestClient) -> None:
    at_limit = {"request": "a" * 3000, "summary": "b" * 3000}
    over = {"request": "a" * 3001}

    assert client.post("/v1/predict", json=at_limit).status_code == 200
    assert error(client.post("/v1/predict", json=over), 413)[0] == "request"
    four = client.post("/v1/predict/batch", json={"items": [{"request": "MRI"}] * 4})
    assert four.status_code == 200
