"""wingpt_client against the real Triton server: answers, streaming, multi-turn, one shared channel."""

from __future__ import annotations

import asyncio
import queue
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as triton
from wingpt_client import AsyncWingptClient, ClientConfig, Health

from wingpt.chat_template import parse_messages, render_text
from wingpt.tokenizer import load_tokenizer

pytestmark = pytest.mark.server

QUESTION = "宝宝15个月37.3度算发烧吗？"
GREEDY = {"temperature": 0.0, "max_tokens": 12}



def test_chat_is_the_streamed_deltas_joined(client):
    whole = client.chat(QUESTION, **GREEDY)
    deltas = list(client.stream_chat(QUESTION, **GREEDY))
    assert whole
    assert len(deltas) > 1, "a streamed answer arrives in pieces"
    assert "".join(deltas) == whole


def test_asyncio_twin_gives_the_same_answers(triton_server, client):
    async def ask() -> tuple[str, str]:
        async with AsyncWingptClient(triton_server.grpc_url) as ac:
            whole = await ac.chat(QUESTION, **GREEDY)
            streamed = "".join([d async for d in ac.stream_chat(QUESTION, **GREEDY)])
            return whole, streamed

    whole, streamed = asyncio.run(ask())
    assert whole == streamed == client.chat(QUESTION, **GREEDY)


def test_a_string_is_one_user_turn(client):
    assert client.chat(QUESTION, **GREEDY) == client.chat([{"role": "user", "content": QUESTION}], **GREEDY)


def test_multi_turn_history_reaches_the_model_as_the_wingpt2_template(triton_server, client):
    """The client's turns, templated by the server, equal the model card's prompt sent as raw text."""
    turns = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "37.3度属于正常范围的上限。"},
        {"role": "user", "content": "那要吃退烧药吗？"},
    ]
    answer = client.chat(turns, **GREEDY)
    assert answer != client.chat(turns[-1:], **GREEDY), "the history changes the answer"

    responses: queue.Queue = queue.Queue()
    raw = triton.InferenceServerClient(triton_server.grpc_url)
    raw.start_stream(callback=lambda result, error: responses.put((result, error)))
    inputs = []
    for name, datatype, value in (
        ("text_input", "BYTES", np.array([[render_text(parse_messages(turns)).encode()]], dtype=object)),
        ("max_tokens", "INT32", np.array([[GREEDY["max_tokens"]]], dtype=np.int32)),
        ("temperature", "FP32", np.array([[0.0]], dtype=np.float32)),
    ):
        tensor = triton.InferInput(name, [1, 1], datatype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    raw.async_stream_infer("ensemble", inputs, request_id="raw-multi-turn", enable_empty_final_response=True)
    result, error = responses.get(timeout=60)
    raw.stop_stream()
    raw.close()
    assert error is None
    assert result.as_numpy("text_output").reshape(-1)[0].decode() == answer


def test_many_concurrent_streams_share_one_channel_and_keep_their_own_text(client):
    """Each stream has its own request id, so the server's per-stream detokenizer never mixes them."""
    questions = [f"{QUESTION} 第{i}个孩子" for i in range(6)]
    expected = [client.chat(q, **GREEDY) for q in questions]
    with ThreadPoolExecutor(len(questions)) as pool:
        streamed = list(pool.map(lambda q: "".join(client.stream_chat(q, **GREEDY)), questions))
    assert streamed == expected
    assert len(set(expected)) == len(expected)


def test_asyncio_streams_run_concurrently_on_one_client(triton_server, client):
    questions = [f"{QUESTION} #{i}" for i in range(6)]
    expected = [client.chat(q, **GREEDY) for q in questions]

    async def ask_all() -> list[str]:
        async with AsyncWingptClient(triton_server.grpc_url) as ac:
            async def one(q: str) -> str:
                return "".join([d async for d in ac.stream_chat(q, **GREEDY)])
            return await asyncio.gather(*(one(q) for q in questions))

    assert asyncio.run(ask_all()) == expected


def test_sampling_options_reach_the_server(client):
    seeded = {"temperature": 0.9, "top_p": 0.9, "top_k": 50, "seed": 7, "max_tokens": 12}
    assert client.chat(QUESTION, **seeded) == client.chat(QUESTION, **seeded)
    assert client.chat(QUESTION, **seeded) != client.chat(QUESTION, **(seeded | {"seed": 8}))
    greedy = client.chat(QUESTION, **GREEDY)
    second = list(client.stream_chat(QUESTION, **GREEDY))[1]
    stopped = client.chat(QUESTION, **GREEDY, stop=[second])
    assert greedy.startswith(stopped) and len(stopped) < len(greedy)
    with pytest.raises(TypeError, match="unknown sampling option 'temprature'"):
        client.chat(QUESTION, temprature=0.1)


def test_end_id_chooses_where_the_answer_ends(client):
    """`end_id` reaches the engine: a token of the greedy answer used as the end token cuts the answer
    there, and -1 (ignore the end token, for load tests) leaves the greedy answer as it is."""
    tok = load_tokenizer(None)
    greedy = client.chat(QUESTION, **GREEDY)
    ids = tok.encode(greedy)
    cut_at = next(i for i, t in enumerate(ids) if i > 0 and t not in ids[:i])
    shortened = client.chat(QUESTION, **GREEDY, end_id=ids[cut_at])
    assert greedy.startswith(shortened) and len(shortened) < len(greedy)
    assert client.chat(QUESTION, **GREEDY, end_id=-1).startswith(greedy)


def test_health_and_model_info(triton_server, client):
    assert client.health() == Health(live=True, ready=True, model_ready=True)
    info = client.model_info()
    assert info.name == "ensemble" and info.decoupled
    assert {"messages", "text_input", "max_tokens", "stream", "stop_words"} <= set(info.inputs)
    assert info.outputs == ("text_output", "triage")
    assert info.embedded_default is True and "random weights" in info.note
    assert info.server_version

    async def async_twin():
        async with AsyncWingptClient(triton_server.grpc_url) as ac:
            return await ac.health(), await ac.model_info()

    assert asyncio.run(async_twin()) == (client.health(), info)


def test_config_from_environment_and_validation(monkeypatch):
    env = {"WINGPT_URL": "grpcs://triton.hospital:8001", "WINGPT_TOKEN": "t0k", "WINGPT_TOKEN_KEY": "Key",
           "WINGPT_TIMEOUT_S": "30", "WINGPT_RETRIES": "0"}
    config = ClientConfig.from_env(env, model="other")
    assert (config.ssl, config.target, config.timeout_s, config.retries, config.model) == (
        True, "triton.hospital:8001", 30.0, 0, "other")
    assert config.metadata() == (("triton-grpc-protocol-key", "t0k"),)
    with pytest.raises(ValueError, match="need ssl=True"):
        ClientConfig(root_certificates="ca.pem")
    with pytest.raises(ValueError, match="both private_key and certificate_chain"):
        ClientConfig(ssl=True, private_key="key.pem")
    with pytest.raises(ValueError, match="host:port"):
        ClientConfig(url="triton")
