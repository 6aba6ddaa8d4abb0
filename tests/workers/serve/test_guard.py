"""`fraud serve`'s guard (workers/serve/guard.py): bearer tokens, limits and malformed
requests, answered with a clear 4xx that never echoes the input."""

import json
import logging

import pytest

from fraud.config import ServeSettings, Settings
from tests.workers.serve.serving import (
    AUTH,
    SCAM,
    TOKEN,
    client_for,
)
from workers.serve import load_tokens

pytestmark = [pytest.mark.model]


def test_with_tokens_score_needs_one_and_probes_do_not(detector):
    other = "second-token"  # noqa: S105
    with client_for(detector, tokens=[TOKEN, other]) as client:
        body = {"id": "a-1", "text": SCAM}
        r = client.post("/v1/score", json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "bearer token" in r.json()["detail"]
        for header in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}"):
            r = client.post("/v1/score", json=body, headers={"Authorization": header})
            assert r.status_code == 401, header
        # Refused before the body is read: invalid JSON without a token is a 401 too.
        r = client.post("/v1/score", content=b"{", headers={"content-type": "application/json"})
        assert r.status_code == 401
        assert client.post("/v1/score", json=body, headers=AUTH).status_code == 200
        r = client.post("/v1/score", json=body, headers={"Authorization": f"bearer {other}"})
        assert r.status_code == 200
        batch = {"messages": [body]}
        assert client.post("/v1/score:batch", json=batch).status_code == 401
        assert client.post("/v1/score:batch", json=batch, headers=AUTH).status_code == 200
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        schema = client.get("/openapi.json").json()
        assert schema["paths"]["/v1/score"]["post"]["security"] == [{"HTTPBearer": []}]


def test_without_tokens_the_service_is_open_on_its_address(detector):
    with client_for(detector) as client:
        assert client.post("/v1/score", json={"id": "o", "text": SCAM}).status_code == 200
        schema = client.get("/openapi.json").json()
        assert "security" not in schema["paths"]["/v1/score"]["post"]
    assert ServeSettings().host == "127.0.0.1"


def test_tokens_come_from_the_environment_and_a_file(tmp_path, monkeypatch):
    path = tmp_path / "tokens"
    path.write_text("# rotated monthly\nalpha\n\n  beta  \n  # old: gamma-1\n")
    monkeypatch.setenv("FRAUD_SERVE__TOKEN", "gamma")
    monkeypatch.setenv("FRAUD_SERVE__TOKEN_FILE", str(path))
    serve = Settings().serve
    assert load_tokens(serve) == ["gamma", "alpha", "beta"]
    assert "gamma" not in Settings().model_dump_json()  # a secret: masked when logged
    assert load_tokens(ServeSettings()) == []
    assert load_tokens(ServeSettings(token="")) == []  # compose's unset ${FRAUD_SERVE_TOKEN:-}
    from fraud.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be read"):
        load_tokens(ServeSettings(token_file=tmp_path / "missing"))
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no token"):
        load_tokens(ServeSettings(token_file=tmp_path / "empty"))


def test_limits_and_malformed_requests_get_a_clear_4xx(detector, caplog):
    serve = ServeSettings(
        max_request_bytes=4096, max_batch_messages=3, max_text_chars=500, max_queue=8
    )
    private = "Grandma here, the PIN is 4321 and the safe code 9876"  # must not be logged
    json_type = {"content-type": "application/json"}
    cases = [
        # (body, headers, status, a phrase of the answer)
        (b'{"id": "x", "text": "a"' + b" " * 5000 + b"}", json_type, 413, "limit is 4096"),
        (json.dumps({"id": "x", "text": "a" * 501}).encode(), json_type, 422, "at most 500"),
        (b"{", json_type, 422, "JSON decode error"),
        (b"", json_type, 422, "Field required"),
        (b'["id", "text"]', json_type, 422, "valid dictionary"),
        (b'{"text": "hello"}', json_type, 422, "Field required"),
        (b'{"id": "x", "text": 5}', json_type, 422, "valid string"),
        (b'{"id": "", "text": "hello"}', json_type, 422, "at least 1 character"),
        (b'{"id": "x", "text": "  \\n\\t "}', json_type, 422, "match pattern"),
        (b'{"id": "x", "text": "hi", "sender": "bank"}', json_type, 422, "Extra inputs"),
        (b'{"id": "x", "text": "\\ud800"}', json_type, 422, "unicode"),
        (b'{"id": "x", "text": "hi", "metadata": "flat"}', json_type, 422, "valid dictionary"),
        (b'{"id": "x", "text": "\xff\xfe\xfa"}', json_type, 400, "parsing the body"),
        (b'{"id": "x", "text": "hello"}', {"content-type": "text/plain"}, 415, "application/json"),
        (b'{"id": "x", "text": "hello"}', {}, 415, "got none"),
    ]
    deep = {"id": "x", "text": "hi", "metadata": {}}
    level = deep["metadata"]
    for _ in range(40):
        level["k"] = {}
        level = level["k"]
    cases.append((json.dumps(deep).encode(), json_type, 422, "nested deeper than 32"))
    batch = {"messages": [{"id": str(i), "text": "hi"} for i in range(4)]}
    with caplog.at_level(logging.DEBUG), client_for(detector, serve) as client:
        for body, headers, status, phrase in cases:
            r = client.post("/v1/score", content=body, headers=headers)
            assert r.status_code == status, (body[:60], r.text)
            assert phrase in r.text, (body[:60], r.text)
            assert r.headers["content-type"] == "application/json"
        r = client.post("/v1/score:batch", json=batch)
        assert r.status_code == 422 and "at most 3 items" in r.text
        r = client.post("/v1/score:batch", json={"messages": []})
        assert r.status_code == 422 and "at least 1 item" in r.text

        def chunks():  # no Content-Length: the limit counts what arrives
            yield b'{"id": "x", "text": "'
            for _ in range(10):
                yield b"a" * 1000
            yield b'"}'

        r = client.post("/v1/score", content=chunks(), headers=json_type)
        assert r.status_code == 413 and "limit is 4096" in r.text
        # Text that normalizes to nothing (zero-width characters) is still scored.
        assert client.post("/v1/score", json={"id": "z", "text": "\u200b\u200d"}).status_code == 200
        assert client.get("/v1/score").status_code == 405
        assert client.get("/nowhere").status_code == 404
        r = client.post("/v1/score", json={"id": "s", "text": private})
        assert r.status_code == 200
        r = client.post("/v1/score", json={"id": "s", "text": private, "extra": 1})
        assert r.status_code == 422
        assert private not in r.text  # the input is not echoed back either
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "Grandma" not in logged and "4321" not in logged
