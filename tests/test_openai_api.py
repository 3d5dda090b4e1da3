"""The OpenAI-compatible endpoint, driven by the real `openai` SDK against the real endpoint and Triton.

The endpoint (`python -m openai_api`) runs as its own process in front of the session's Triton server,
with an API key file, as `make serve` and the Helm chart run it.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from wingpt_client import WingptClient

from openai_api.settings import OpenAISettings
from serving.launch import free_port
from tests.openai_endpoints import Endpoint, running_endpoint
from tests.reliability_servers import wait_until
from wingpt.chat_template import build_prompt_ids, parse_messages
from wingpt.tokenizer import load_tokenizer

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "宝宝15个月37.3度算发烧吗？"
EMERGENCY = "我爸突然胸口剧痛，满头大汗"
KEY = "sk-test-ward-3"
GREEDY = {"temperature": 0.0, "max_tokens": 12}
CJK = re.compile(r"[\u4e00-\u9fff]")


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("openai-keys") / "api-keys"
    path.write_text(f"# ward 3\n{KEY}\n\nsk-other\n")
    return path


@pytest.fixture(scope="module")
def endpoint(triton_server, keys_file) -> Iterator[Endpoint]:
    with running_endpoint("main", triton_server.grpc_url, "--api-keys-file", str(keys_file)) as e:
        yield e


@pytest.fixture(scope="module")
def sdk(endpoint) -> openai.OpenAI:
    return openai.OpenAI(base_url=endpoint.base_url, api_key=KEY, max_retries=0)


def metric(url: str, request_type: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    pattern = rf'nv_trt_llm_request_metrics\{{[^}}]*request_type="{request_type}"[^}}]*\}} (\S+)'
    return sum(float(v) for v in re.findall(pattern, text))


# --- answers ------------------------------------------------------------------------------------------------------


def test_one_shot_answer_is_chinese_with_usage_counted_by_the_projects_tokenizer(sdk, client):
    completion = sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), **GREEDY)
    (choice,) = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == client.chat(QUESTION, **GREEDY), "the same answer as Triton's own client"
    assert CJK.search(choice.message.content)
    assert completion.id.startswith("chatcmpl-") and completion.model == "wingpt2"
    tok = load_tokenizer(None)
    prompt_ids, _ = build_prompt_ids(tok, parse_messages(ask(QUESTION)), 512 - 12)
    assert completion.usage.prompt_tokens == len(prompt_ids)
    assert completion.usage.completion_tokens == 12 and choice.finish_reason == "length"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 12


def test_greedy_stream_equals_the_one_shot_answer_and_reports_usage_last(sdk):
    whole = sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), **GREEDY)
    chunks = list(sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), stream=True,
                                              stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1, "streamed in pieces"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    plain = list(sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), stream=True, **GREEDY))
    assert all(c.usage is None for c in plain), "usage only when stream_options.include_usage asks for it"


def test_async_sdk_streams_and_answers_the_same(endpoint, sdk):
    expected = sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), **GREEDY).choices[0].message.content

    async def run() -> tuple[str, list[str]]:
        async with openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=KEY, max_retries=0) as aio:
            whole = await aio.chat.completions.create(model="wingpt2", messages=ask(QUESTION), **GREEDY)

            async def streamed(i: int) -> str:
                stream = await aio.chat.completions.create(model="wingpt2", messages=ask(QUESTION), stream=True,
                                                           **GREEDY)
                return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

            return whole.choices[0].message.content, await asyncio.gather(*(streamed(i) for i in range(4)))

    whole, streams = asyncio.run(run())
    assert whole == expected and streams == [expected] * 4


def test_multi_turn_system_and_text_parts_reach_the_template(sdk, client):
    turns = [{"role": "system", "content": "你是分诊助手"}, {"role": "user", "content": QUESTION},
             {"role": "assistant", "content": "37.3度属于正常范围的上限。"},
             {"role": "user", "content": "那要吃退烧药吗？"}]
    parts = [*turns[:-1], {"role": "user", "content": [{"type": "text", "text": "那要吃"}, {"type": "text",
                                                                                          "text": "退烧药吗？"}]}]
    answer = sdk.chat.completions.create(model="wingpt2", messages=turns, **GREEDY).choices[0].message.content
    assert answer == client.chat(turns, **GREEDY)
    assert sdk.chat.completions.create(model="wingpt2", messages=parts, **GREEDY).choices[0].message.content == answer


def test_stop_sequences_end_the_answer_without_being_part_of_it(sdk):
    full = sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), **GREEDY).choices[0].message.content
    pieces = [c.choices[0].delta.content for c in sdk.chat.completions.create(
        model="wingpt2", messages=ask(QUESTION), stream=True, **GREEDY) if c.choices and c.choices[0].delta.content]
    stop = pieces[2]
    before = full[: full.index(stop)]
    stopped = sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), stop=[stop, "永远不会出现的词"],
                                          **GREEDY)
    assert stopped.choices[0].message.content == before
    assert stopped.choices[0].finish_reason == "stop"
    streamed = list(sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), stop=stop, stream=True,
                                                **GREEDY))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == before
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_sampling_fields_and_extensions_reach_the_server(sdk):
    def answer(**kw) -> str:
        return sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), max_tokens=12,
                                           **kw).choices[0].message.content

    greedy = answer(temperature=0)
    seeded = {"temperature": 0.9, "top_p": 0.9, "seed": 7}
    assert answer(**seeded) == answer(**seeded)
    assert answer(**seeded) != answer(**{**seeded, "seed": 8})
    assert answer(temperature=0.9, seed=7, extra_body={"top_k": 1}) == answer(temperature=0)
    first_piece = next(c.choices[0].delta.content for c in sdk.chat.completions.create(
        model="wingpt2", messages=ask(QUESTION), stream=True, temperature=0, max_tokens=12)
        if c.choices and c.choices[0].delta.content)
    banned = answer(temperature=0, extra_body={"bad_words": [first_piece]})
    assert not banned.startswith(first_piece) and greedy.startswith(first_piece)
    assert answer(temperature=0, extra_body={"repetition_penalty": 1.0})
    with pytest.raises(openai.BadRequestError, match="repetition_penalty"):
        answer(extra_body={"repetition_penalty": 0})
    by_new_name = sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), temperature=0,
                                              max_completion_tokens=12)
    assert by_new_name.choices[0].message.content == greedy
    exact = sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), max_tokens=20, temperature=0,
                                        extra_body={"ignore_eos": True, "min_tokens": 20})
    assert exact.usage.completion_tokens == 20 and exact.choices[0].finish_reason == "length"


# --- triage ---------------------------------------------------------------------------------------------------------


def test_an_emergency_gets_the_notice_first_and_the_flags_beside_it(endpoint, sdk):
    raw = sdk.chat.completions.with_raw_response.create(model="wingpt2", messages=ask(EMERGENCY), **GREEDY)
    completion = raw.parse()
    assert raw.headers["x-triage-level"] == "emergency"
    triage = completion.triage
    assert triage["level"] == "emergency" and triage["categories"]
    assert "120" in triage["notice"]
    assert completion.choices[0].message.content.startswith(triage["notice"] + "\n\n")

    with sdk.chat.completions.with_streaming_response.create(model="wingpt2", messages=ask(EMERGENCY), stream=True,
                                                             **GREEDY) as response:
        assert response.headers["x-triage-level"] == "emergency"
        chunks = list(response.parse())
    assert chunks[0].triage == triage
    assert chunks[1].choices[0].delta.content == triage["notice"] + "\n\n", "the notice before any answer text"

    ordinary = sdk.chat.completions.with_raw_response.create(model="wingpt2", messages=ask(QUESTION), **GREEDY)
    assert ordinary.headers["x-triage-level"] == "none"
    assert ordinary.parse().triage["level"] == "none"


def test_the_notice_can_stay_out_of_the_content(triton_server, keys_file):
    with running_endpoint("no-notice", triton_server.grpc_url, "--triage-notice", "0") as e:
        sdk = openai.OpenAI(base_url=e.base_url, api_key="unused", max_retries=0)
        completion = sdk.chat.completions.create(model="wingpt2", messages=ask(EMERGENCY), **GREEDY)
    assert completion.triage["level"] == "emergency"
    assert completion.triage["notice"] not in completion.choices[0].message.content


def test_models_lists_the_served_model_with_the_disclaimer(sdk, client):
    (model,) = sdk.models.list().data
    assert model.id == "wingpt2" and model.object == "model"
    assert model.metadata["disclaimer"] == client.model_info().disclaimer != ""
    assert model.metadata["embedded_default"] is True
    assert sdk.models.retrieve("wingpt2").id == "wingpt2"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("gpt-4o")


def test_health_endpoints_need_no_key_and_readiness_follows_triton(endpoint, triton_server):
    assert endpoint.get("/health/live") == 200
    assert endpoint.get("/health/ready") == 200
    with running_endpoint("no-triton", f"127.0.0.1:{free_port()}", WINGPT_RETRIES="0") as dead:
        assert dead.get("/health/live") == 200, "the process is fine: do not restart it"
        assert dead.get("/health/ready") == 503, "Triton is not: send no traffic"


# --- errors ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "param"), [
    ({"n": 2}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "triage", "parameters": {}}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"logprobs": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 100000}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "assistant", "content": "只有助手"}]}, "messages"),
    ({"stop": [""]}, "stop"),
    ({"frobnicate": 1}, "frobnicate"),
])
def test_invalid_or_unsupported_fields_are_400_naming_the_field(sdk, fields, param):
    body = {"model": "wingpt2", "messages": ask(QUESTION), "max_tokens": 4, **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(**{k: v for k, v in body.items() if k != "frobnicate"},
                                    extra_body={k: v for k, v in body.items() if k == "frobnicate"})
    error = caught.value.body
    assert caught.value.status_code == 400
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert param.split("[")[0].split(".")[0] in error["message"]


def test_an_unknown_model_is_404_and_a_broken_body_400(sdk, endpoint):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=ask(QUESTION))
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"
    response = httpx.post(f"{endpoint.base_url}/chat/completions", content=b"{not json",
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_a_deadline_is_504_and_stops_the_generation(triton_server):
    cancelled = metric(triton_server.metrics_url, "cancelled")
    with running_endpoint("deadline", triton_server.grpc_url, "--timeout", "0.5") as e:
        sdk = openai.OpenAI(base_url=e.base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), max_tokens=256, temperature=0,
                                        extra_body={"ignore_eos": True})
        assert caught.value.status_code == 504 and caught.value.body["code"] == "deadline_exceeded"
        assert wait_until(lambda: metric(triton_server.metrics_url, "cancelled") >= cancelled + 1, 30)


def test_triton_down_is_503_with_retry_after():
    with running_endpoint("down", f"127.0.0.1:{free_port()}", WINGPT_RETRIES="0") as e:
        sdk = openai.OpenAI(base_url=e.base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), max_tokens=4)
        assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"] == "2"
        assert caught.value.body["code"] == "service_unavailable"
        with pytest.raises(openai.InternalServerError):
            sdk.models.list()


# --- API keys -------------------------------------------------------------------------------------------------------


def test_a_missing_or_wrong_key_is_401(endpoint):
    for key in ("sk-wrong", "sk-test-ward"):
        sdk = openai.OpenAI(base_url=endpoint.base_url, api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), max_tokens=4)
        assert caught.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            sdk.models.list()
    response = httpx.post(f"{endpoint.base_url}/chat/completions", json={"model": "wingpt2", "messages": ask("你好")})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert openai.OpenAI(base_url=endpoint.base_url, api_key="sk-other", max_retries=0).models.list().data


def test_keys_are_reread_when_the_secret_file_changes(endpoint, keys_file):
    new = openai.OpenAI(base_url=endpoint.base_url, api_key="sk-rotated", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        new.models.list()
    original = keys_file.read_text()
    try:
        replacement = keys_file.with_name("api-keys.new")
        replacement.write_text(original + "sk-rotated\n")
        replacement.replace(keys_file)  # the kubelet swaps a Secret's files atomically, too
        assert new.models.list().data
    finally:
        keys_file.write_text(original)


def test_without_keys_it_serves_loopback_only():
    assert OpenAISettings.from_args([], environ={}).loopback
    with pytest.raises(ValueError, match=re.escape("refusing to serve without API keys on 0.0.0.0")):
        OpenAISettings.from_args(["--host", "0.0.0.0"], environ={})
    assert not OpenAISettings.from_args(["--host", "0.0.0.0", "--allow-no-keys"], environ={}).loopback
    assert OpenAISettings.from_args([], environ={"WINGPT_OPENAI_HOST": "10.0.0.5",
                                                 "WINGPT_OPENAI_API_KEYS_FILE": "/run/keys"}).host == "10.0.0.5"
    done = subprocess.run([sys.executable, "-m", "openai_api", "--host", "0.0.0.0", "--port", str(free_port())],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "refusing to serve without API keys" in done.stderr


# --- cancellation ---------------------------------------------------------------------------------------------------


def test_a_client_that_disconnects_mid_stream_stops_the_generation(endpoint, triton_server):
    url = triton_server.metrics_url
    assert wait_until(lambda: metric(url, "active") == 0, 30), "engine still busy from earlier tests"
    cancelled = metric(url, "cancelled")
    sdk = openai.OpenAI(base_url=endpoint.base_url, api_key=KEY, max_retries=0)
    stream = sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), max_tokens=256, temperature=0,
                                         stream=True, extra_body={"ignore_eos": True})
    received = 0
    for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received == 2:
            break
    stream.close()  # drops the HTTP connection mid-answer
    assert wait_until(lambda: metric(url, "cancelled") == cancelled + 1, 30), "stopped, not run on to max_tokens"
    assert wait_until(lambda: metric(url, "active") == 0, 30)


def test_the_log_carries_no_patient_text(endpoint):
    time.sleep(0)  # the endpoint's log is written by another process; everything above has been answered
    log = endpoint.log_text()
    assert "chat " in log and "finish=" in log
    for text in (QUESTION, EMERGENCY, "胸口"):
        assert text not in log


def test_one_channel_serves_concurrent_requests(sdk):
    expected = sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), **GREEDY).choices[0].message.content
    results: list[str] = []

    def one() -> None:
        results.append(sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION),
                                                   **GREEDY).choices[0].message.content)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 6


def test_the_client_library_and_the_endpoint_agree_on_errors(triton_server, sdk):
    with WingptClient(triton_server.grpc_url) as c, pytest.raises(Exception) as direct:
        c.chat(QUESTION, max_tokens=100000)
    with pytest.raises(openai.BadRequestError) as via_openai:
        sdk.chat.completions.create(model="wingpt2", messages=ask(QUESTION), max_tokens=100000)
    assert via_openai.value.body["message"] == direct.value.message
