"""WiNGPT2 chat end to end through the real Triton server over gRPC."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype

from serving.ensemble_calls import EnsembleStream, call, chat_inputs, engine_metric

pytestmark = pytest.mark.server
FEVER = [{"role": "user", "content": "宝宝15个月37.3度算发烧吗？"}]
LIVER = [{"role": "user", "content": "肝肿瘤指标高就是癌症吗"}]


def test_a_streamed_chat_arrives_token_by_token_and_matches_the_unstreamed_answer(triton_server) -> None:
    streamed = call(triton_server.grpc_url, **chat_inputs(FEVER, max_tokens=24, stream=True))
    whole = call(triton_server.grpc_url, **chat_inputs(FEVER, max_tokens=24, stream=False))
    assert streamed.error is None and whole.error is None
    assert len(streamed.deltas) >= 10  # one response per token, a few held back mid-character
    assert len(whole.deltas) == 1
    assert streamed.text == whole.text
    assert any("\u4e00" <= ch <= "\u9fff" for ch in streamed.text)


def test_multi_turn_history_changes_the_answer(triton_server) -> None:
    history = [*LIVER, {"role": "assistant", "content": "不一定，需要进一步检查。"}, *FEVER]
    alone = call(triton_server.grpc_url, **chat_inputs(FEVER, max_tokens=12))
    with_history = call(triton_server.grpc_url, **chat_inputs(history, max_tokens=12))
    assert alone.error is None and with_history.error is None
    assert alone.text != with_history.text


def test_raw_text_input_is_served_as_given(triton_server) -> None:
    raw = call(triton_server.grpc_url, text_input="User: 宝宝15个月37.3度算发烧吗？<|endoftext|>\n Assistant:",
               max_tokens=12)
    chat = call(triton_server.grpc_url, **chat_inputs(FEVER, max_tokens=12))
    assert raw.text == chat.text


def test_a_request_arriving_mid_generation_joins_the_running_batch(triton_server) -> None:
    url = triton_server.grpc_url
    alone_a = call(url, **chat_inputs(FEVER, max_tokens=48, stream=True)).text
    alone_b = call(url, **chat_inputs(LIVER, max_tokens=16, stream=True)).text

    first = EnsembleStream(url, chat_inputs(FEVER, max_tokens=48, stream=True))
    first.read(count=5)  # A is generating
    second = EnsembleStream(url, chat_inputs(LIVER, max_tokens=16, stream=True))
    b_result: dict = {}
    reader = threading.Thread(target=lambda: b_result.update(r=second.read()))
    reader.start()
    a = first.read()
    reader.join()
    b = b_result["r"]
    first.close()
    second.close()
    assert a.error is None and b.error is None
    assert b.arrivals[0] < a.arrivals[-1], "B's first token should come while A is still generating"
    assert b.arrivals[-1] < a.arrivals[-1], "B (16 tokens) should finish before A (48 tokens) ends"
    assert a.text == alone_a and b.text == alone_b  # batching does not change greedy answers


def test_cancelling_an_engine_stream_stops_its_generation_on_the_server(triton_server) -> None:
    """Cancellation reaches the engine for requests sent to it directly. Through the ensemble,
    Triton 2.51 only cancels steps not yet started (see README, Operating it)."""
    url, metrics = triton_server.grpc_url, triton_server.metrics_url
    cancelled_before = engine_metric(metrics, "cancelled")
    client = grpcclient.InferenceServerClient(url)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    client.async_stream_infer("torch_llm", [
        _tensor("input_ids", np.array([[1474, 25, 41479, 251, 99388]], dtype=np.int32)),
        _tensor("input_lengths", np.array([[5]], dtype=np.int32)),
        _tensor("request_output_len", np.array([[256]], dtype=np.int32)),
        _tensor("streaming", np.array([[True]])),
    ], request_id="cancel-me")
    for _ in range(3):
        _result, error = responses.get(timeout=60)
        assert error is None
    client.stop_stream(cancel_requests=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and engine_metric(metrics, "cancelled") == cancelled_before:
        time.sleep(0.2)
    assert engine_metric(metrics, "cancelled") == cancelled_before + 1
    while time.monotonic() < deadline and engine_metric(metrics, "active") != 0:
        time.sleep(0.2)
    assert engine_metric(metrics, "active") == 0


def _tensor(name: str, array: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array)
    return tensor


@pytest.mark.parametrize(
    ("inputs", "field"),
    [
        ({"max_tokens": 8}, "messages"),  # neither messages nor text_input
        ({"messages": "[]"}, "messages"),
        ({"messages": '[{"role":"nurse","content":"头痛"}]'}, "messages[0].role"),
        ({"messages": "{broken"}, "messages"),
        ({"messages": b"[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]"}, "messages"),
        ({"text_input": b"\xff\xfe"}, "text_input"),
        (chat_inputs(FEVER, max_tokens=0), "max_tokens"),
        (chat_inputs(FEVER, max_tokens=100000), "max_tokens"),
        (chat_inputs(FEVER, temperature=-0.5), "temperature"),
        (chat_inputs(FEVER, top_p=0.0), "top_p"),
        (chat_inputs(FEVER, top_p=1.5), "top_p"),
        (chat_inputs([{"role": "user", "content": "痛" * 600}]), "messages"),
        ({"text_input": "痛" * 600}, "text_input"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error_and_the_server_keeps_serving(triton_server, inputs, field) -> None:
    result = call(triton_server.grpc_url, **inputs)
    assert result.error is not None and "[INVALID_ARGUMENT]" in result.error
    assert field in result.error
    assert "Traceback" not in result.error
    assert call(triton_server.grpc_url, **chat_inputs(FEVER, max_tokens=4)).error is None


def test_the_model_says_it_is_the_embedded_smoke_test_model(triton_server) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    params = client.get_model_config("ensemble").config.parameters
    assert params["embedded_default"].string_value == "true"
    assert "meaningless" in params["model_note"].string_value
    assert "MODEL_DIR" in params["model_note"].string_value


def test_the_engine_exports_its_kv_cache_blocks_as_the_tensorrt_llm_backend_does(triton_server) -> None:
    import urllib.request

    assert call(triton_server.grpc_url, **chat_inputs(FEVER, max_tokens=8)).error is None
    blocks = {}
    with urllib.request.urlopen(triton_server.metrics_url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("nv_trt_llm_kv_cache_block_metrics{") and 'model="torch_llm"' in line:
                kind = line.split('kv_cache_block_type="', 1)[1].split('"', 1)[0]
                blocks[kind] = float(line.rsplit(" ", 1)[1])
    assert set(blocks) == {"max", "free", "used", "tokens_per"}
    settings = triton_server.settings
    # The CPU budget by default: a full context window for every sequence of the batch, in 32-token blocks.
    assert blocks["tokens_per"] == settings.kv_block_size == 32
    assert blocks["max"] == settings.max_batch_size * settings.context_window // 32
    assert blocks["used"] + blocks["free"] == blocks["max"]
