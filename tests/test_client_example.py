"""client/examples/triage_service.py: the FastAPI backend example, run against the real Triton server."""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient
from wingpt_client import WingptClient

pytestmark = pytest.mark.server

EXAMPLE = Path(__file__).resolve().parent.parent / "client" / "examples" / "triage_service.py"
QUESTION = [{"role": "user", "content": "宝宝15个月37.3度算发烧吗？"}]


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("triage_service", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def http(triton_server, monkeypatch) -> Iterator[TestClient]:
    monkeypatch.setenv("WINGPT_URL", triton_server.grpc_url)
    with TestClient(_load_example().app) as client:
        yield client


def test_chat_endpoint_answers(http, triton_server):
    response = http.post("/v1/triage/chat", json={"messages": QUESTION, "max_tokens": 8})
    assert response.status_code == 200
    with WingptClient(triton_server.grpc_url) as direct:
        assert response.json() == {
            "answer": direct.chat(QUESTION, max_tokens=8),
            "triage": {"level": "none", "categories": [], "notice": ""},
        }


def test_stream_endpoint_streams_the_same_text(http):
    whole = http.post("/v1/triage/chat", json={"messages": QUESTION, "max_tokens": 8}).json()["answer"]
    with http.stream("POST", "/v1/triage/stream", json={"messages": QUESTION, "max_tokens": 8}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        chunks = list(response.iter_text())
    assert "".join(chunks) == whole


def test_an_emergency_carries_the_triage_and_the_notice_comes_first(http):
    chest_pain = [{"role": "user", "content": "我胸口剧痛，一直出冷汗，左臂发麻"}]
    whole = http.post("/v1/triage/chat", json={"messages": chest_pain, "max_tokens": 8}).json()
    assert whole["triage"]["level"] == "emergency" and whole["triage"]["categories"] == ["chest_pain_acs"]
    with http.stream("POST", "/v1/triage/stream", json={"messages": chest_pain, "max_tokens": 8}) as response:
        assert response.headers["x-triage-level"] == "emergency"
        body = "".join(response.iter_text())
    assert body == f"{whole['triage']['notice']}\n\n{whole['answer']}"


def test_model_refusals_become_422_with_the_servers_message(http):
    for path in ("/v1/triage/chat", "/v1/triage/stream"):
        response = http.post(path, json={"messages": QUESTION, "max_tokens": 0})
        assert response.status_code == 422
        assert response.json()["detail"] == "max_tokens: must be > 0, got 0"


def test_health_and_unreachable_model_server(http, monkeypatch):
    assert http.get("/healthz").json() == {"ok": True}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("WINGPT_URL", dead)
    monkeypatch.setenv("WINGPT_RETRIES", "0")
    with TestClient(_load_example().app) as down:
        assert down.get("/healthz").status_code == 503
        response = down.post("/v1/triage/chat", json={"messages": QUESTION})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
