"""Every client gets the whole service: plain tritonclient and Triton's HTTP generate endpoint, with no
request id or a shared one, get intact Chinese, the triage notice first, cancellation and isolation.

The public model `ensemble` is one BLS orchestrator that makes its own engine id per request, so
nothing depends on the id a client sends (model_repository/ensemble/1/model.py).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.ensemble_calls import EnsembleStream, call, chat_inputs, engine_metric
from tests.reliability_servers import wait_until
from wingpt.safety.rules import DEFAULT_RULES

EMERGENCY = "我爸突然胸口剧痛，满头大汗"
ORDINARY = "宝宝15个月37.3度算发烧吗？"


def chat(question: str, **params) -> dict:
    return chat_inputs([{"role": "user", "content": question}], **{"max_tokens": 24, **params})


def generate(triton_server, question: str, stream: bool) -> list[dict]:
    """Triton's own HTTP generate endpoint, as curl would call it (no id): the JSON events it sends."""
    suffix = "generate_stream" if stream else "generate"
    body = json.dumps({"messages": json.dumps([{"role": "user", "content": question}], ensure_ascii=False),
                       "max_tokens": 24, "stream": stream}).encode()
    url = f"http://127.0.0.1:{triton_server.settings.http_port}/v2/models/ensemble/{suffix}"
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=120) as response:
        raw = response.read().decode("utf-8")
    if not stream:
        return [json.loads(raw)]
    return [json.loads(line[len("data: "):]) for line in raw.splitlines() if line.startswith("data: ")]


@pytest.fixture(scope="module")
def solo(triton_server) -> dict[str, str]:
    """Each question's greedy answer alone, with a unique id: what every other way of asking must give."""
    return {q: call(triton_server.grpc_url, **chat(q, stream=True)).text for q in (EMERGENCY, ORDINARY)}


def test_tritonclient_without_an_id_gets_the_notice_before_any_text(triton_server, solo):
    result = call(triton_server.grpc_url, request_id=None, **chat(EMERGENCY, stream=True))
    assert result.error is None
    assert "triage" in result.outputs[0] and result.deltas[0] == "", "the notice comes alone, first"
    assert result.triage["level"] == "emergency" and result.triage["notice"]
    assert sum("triage" in names for names in result.outputs) == 1
    assert result.text == solo[EMERGENCY]
    assert "\ufffd" not in result.text


def test_tritonclient_without_an_id_streams_what_the_one_shot_answer_says(triton_server, solo):
    streamed = call(triton_server.grpc_url, request_id=None, **chat(ORDINARY, stream=True))
    one_shot = call(triton_server.grpc_url, request_id=None, **chat(ORDINARY, stream=False))
    assert streamed.text == one_shot.text == solo[ORDINARY]
    assert len(one_shot.outputs) == 1 and "triage" in one_shot.outputs[0]
    assert one_shot.triage["level"] == "none"
    assert len(streamed.deltas) > 1


def test_the_http_generate_stream_endpoint_gets_the_notice_first(triton_server, solo):
    events = generate(triton_server, EMERGENCY, stream=True)
    assert json.loads(events[0]["triage"])["level"] == "emergency"
    assert events[0]["text_output"] == ""
    assert "".join(e["text_output"] for e in events) == solo[EMERGENCY]


def test_the_http_generate_endpoint_answers_with_the_triage(triton_server, solo):
    (event,) = generate(triton_server, EMERGENCY, stream=False)
    assert json.loads(event["triage"])["level"] == "emergency"
    assert event["text_output"] == solo[EMERGENCY]


def test_two_streams_sharing_an_id_each_get_their_own_text_and_triage(triton_server, solo):
    results: dict[str, object] = {}

    def ask(question: str) -> None:
        results[question] = call(triton_server.grpc_url, request_id="shared-id", **chat(question, stream=True))

    threads = [threading.Thread(target=ask, args=(q,)) for q in (EMERGENCY, ORDINARY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[EMERGENCY].text == solo[EMERGENCY]
    assert results[ORDINARY].text == solo[ORDINARY]
    assert results[EMERGENCY].triage["level"] == "emergency"
    assert results[ORDINARY].triage["level"] == "none"


def test_a_reused_id_is_as_good_as_a_fresh_one(triton_server, solo):
    """An answer cut by max_tokens used to leave that id's stream state behind; now nothing is kept."""
    for question in (EMERGENCY, ORDINARY, EMERGENCY):
        result = call(triton_server.grpc_url, request_id="fixed-id", **chat(question, stream=True))
        assert result.text == solo[question]
        assert result.triage["level"] == ("emergency" if question == EMERGENCY else "none")


def test_cancelling_one_of_two_streams_sharing_an_id_leaves_the_other_alone(triton_server):
    full = call(triton_server.grpc_url, **chat(ORDINARY, stream=True, max_tokens=96, end_id=-1)).text
    cancelled_before = engine_metric(triton_server.metrics_url, "cancelled")
    doomed = EnsembleStream(triton_server.grpc_url, chat(EMERGENCY, stream=True, max_tokens=200), "shared")
    kept = EnsembleStream(triton_server.grpc_url, chat(ORDINARY, stream=True, max_tokens=96, end_id=-1), "shared")
    doomed.read(2)
    doomed.cancel()
    assert kept.read().text == full
    kept.close()
    assert wait_until(lambda: engine_metric(triton_server.metrics_url, "cancelled") > cancelled_before, 30)


def test_cancelling_a_non_streamed_request_frees_its_engine_slot(triton_server):
    """A one-shot answer sends nothing until it is done, so no token can carry the cancel: the
    orchestrator finds it on its timer and stops the engine."""
    url = triton_server.metrics_url
    assert wait_until(lambda: engine_metric(url, "active") == 0, 60)
    cancelled_before = engine_metric(url, "cancelled")
    completed_before = engine_metric(url, "completed")
    stream = EnsembleStream(triton_server.grpc_url, chat(ORDINARY, stream=False, max_tokens=256, end_id=-1), None)
    assert wait_until(lambda: engine_metric(url, "active") == 1, 60)
    stream.cancel()
    assert wait_until(lambda: engine_metric(url, "cancelled") == cancelled_before + 1, 30)
    assert wait_until(lambda: engine_metric(url, "active") == 0, 30)
    assert engine_metric(url, "completed") == completed_before


def test_as_many_concurrent_streams_as_the_engine_runs_and_queues_are_all_answered(triton_server, solo):
    """The test server runs 4 and queues 8: twelve streams at once (no ids) are all answered in full."""
    settings = triton_server.settings
    results = []

    def ask() -> None:
        results.append(call(triton_server.grpc_url, request_id=None, **chat(ORDINARY, stream=True)))

    assert wait_until(lambda: engine_metric(triton_server.metrics_url, "active") == 0, 60)
    threads = [threading.Thread(target=ask) for _ in range(settings.max_batch_size + settings.max_queue_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.error for r in results] == [None] * len(threads)
    assert {r.text for r in results} == {solo[ORDINARY]}


@pytest.fixture
def notice_only(triton_server) -> Iterator[None]:
    """The hospital's rules switched to notice-only answers (the server reloads them within a second)."""
    path = Path(triton_server.settings.safety_rules)
    original = DEFAULT_RULES.read_text(encoding="utf-8")
    path.write_text(original.replace("continue_generation: true", "continue_generation: false"), encoding="utf-8")
    time.sleep(1.5)
    try:
        yield
    finally:
        path.write_text(original, encoding="utf-8")
        time.sleep(1.5)


def test_notice_only_answers_reach_clients_without_an_id(triton_server, notice_only):
    for stream in (True, False):
        result = call(triton_server.grpc_url, request_id=None, **chat(EMERGENCY, stream=stream))
        assert result.error is None
        assert result.triage["level"] == "emergency" and result.triage["notice"]
        assert result.text == "" and len(result.outputs) == 1
    (event,) = generate(triton_server, EMERGENCY, stream=False)
    assert json.loads(event["triage"])["level"] == "emergency" and event["text_output"] == ""
