"""Fuzzing of request parsing: in-process (thousands of cases) and through the real server.

Every input either parses or is rejected with InvalidRequest naming its field; nothing else
escapes (an uncaught exception in the orchestrator would end the request with a vague INTERNAL error).
"""

from __future__ import annotations

import json
import struct
import uuid

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from wingpt.chat_template import ROLES, build_prompt_ids, parse_messages
from wingpt.errors import InvalidRequest
from wingpt.sampling import resolve_max_tokens, resolve_sampling
from wingpt.tokenizer import load_tokenizer

TOKENIZER = load_tokenizer(None)
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))

# Text with what real traffic should not contain: control characters, lone surrogates (valid in
# JSON escapes), the tokenizer's special tokens, long runs.
nasty_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec=None, categories=["Cc", "Cf", "Cs", "Co", "Zl", "Zp"])),
    st.sampled_from(["<|endoftext|>", "<|im_start|>", "User: ", "\n Assistant:", "\ufeff", "\x00"]),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=4), st.integers(1000, 20000)),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | nasty_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)
turns = st.lists(
    st.fixed_dictionaries(
        {"role": st.one_of(st.sampled_from(ROLES), json_values), "content": st.one_of(nasty_text, json_values)}),
    max_size=6,
)


def check_parse(raw: object) -> None:
    try:
        messages = parse_messages(raw)  # type: ignore[arg-type]
    except InvalidRequest as exc:
        assert exc.field.startswith("messages"), exc
        assert len(str(exc)) < 400, "an error must not echo a huge input back"
        return
    try:
        ids, _ = build_prompt_ids(TOKENIZER, messages, 300)
    except InvalidRequest as exc:
        assert exc.field == "messages", exc
        return
    assert 0 < len(ids) <= 300


@FUZZ
@given(turns)
def test_any_list_of_turns_parses_or_names_the_bad_field(value):
    check_parse(json.dumps(value))
    check_parse(value)


@FUZZ
@given(json_values)
def test_any_json_shape_parses_or_names_the_bad_field(value):
    check_parse(json.dumps(value))


@FUZZ
@given(st.one_of(st.binary(max_size=300), nasty_text.map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_any_bytes_parse_or_name_the_bad_field(raw):
    check_parse(raw)


def test_pathological_json_is_rejected_not_crashed():
    for raw in ("[" * 100_000, '{"a":' * 50_000, "1e99999", '[{"role":"user","content":"x"}' + "," * 10**5 + "]",
                "\ufeff[]", "1" * 5000, '[{"role":"user","content":"x","n":' + "9" * 5000 + "}]",
                '[{"role":"' + "x" * 10**6 + '","content":"a"}]'):
        check_parse(raw)


@FUZZ
@given(st.one_of(st.none(), st.floats(), st.integers(-2**70, 2**70)), st.one_of(st.none(), st.integers(-5, 10**9)),
       st.one_of(st.none(), st.floats()), st.one_of(st.none(), st.floats()), st.one_of(st.none(), st.integers(-9, 9)))
def test_any_sampling_values_resolve_or_name_the_bad_field(temperature, top_k, top_p, penalty, seed):
    try:
        resolve_sampling(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=penalty, seed=seed)
    except InvalidRequest as exc:
        assert exc.field in {"temperature", "top_k", "top_p", "repetition_penalty", "random_seed"}, exc


@FUZZ
@given(st.one_of(st.none(), st.integers(-2**40, 2**40)))
def test_any_max_tokens_resolves_or_names_the_field(max_tokens):
    try:
        assert 0 < resolve_max_tokens(max_tokens, 32, 256) <= 256
    except InvalidRequest as exc:
        assert exc.field == "max_tokens", exc


# ---------------------------------------------------------------- through the real server
INPUTS = {  # ensemble input -> its Triton datatype
    "messages": "BYTES", "text_input": "BYTES", "max_tokens": "INT32", "stream": "BOOL", "temperature": "FP32",
    "top_k": "INT32", "top_p": "FP32", "repetition_penalty": "FP32", "random_seed": "UINT64",
    "stop_words": "BYTES", "bad_words": "BYTES", "end_id": "INT32", "pad_id": "INT32", "not_an_input": "INT32",
}
SIZES = {"INT32": 4, "FP32": 4, "UINT64": 8, "BOOL": 1}


def _bytes_elements(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


@st.composite
def raw_tensor(draw, name: str) -> tuple[str, str, list[int], bytes]:
    """A tensor that is usually well formed and sometimes has the wrong dtype, shape or bytes."""
    datatype = draw(st.sampled_from([INPUTS[name]] * 4 + ["INT32", "FP32", "BYTES", "BOOL", "INT64"]))
    shape = draw(st.sampled_from([[1, 1]] * 6 + [[1, 2], [2, 1], [1], [1, 0]]))
    count = max(0, shape[0] * shape[1]) if len(shape) == 2 else shape[0]
    if datatype == "BYTES":
        if name == "messages" and draw(st.booleans()):
            items = [json.dumps(draw(turns), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")]
        else:
            items = [draw(st.one_of(st.binary(max_size=60), nasty_text.map(lambda s: s[:2000].encode(
                "utf-8", "surrogatepass"))))]
        raw = _bytes_elements((items * count)[:count])
        if draw(st.integers(0, 9)) == 0:
            raw = draw(st.binary(max_size=12))  # a broken length prefix
    elif name == "max_tokens" and datatype == "INT32":
        raw = b"".join(struct.pack("<i", draw(st.sampled_from([1, 2, 0, -1, 10**6]))) for _ in range(count))
    else:
        raw = draw(st.binary(min_size=SIZES.get(datatype, 8) * count, max_size=SIZES.get(datatype, 8) * count))
    return name, datatype, shape, raw


@st.composite
def raw_request(draw) -> list[tuple[str, str, list[int], bytes]]:
    names = draw(st.lists(st.sampled_from(sorted(INPUTS)), max_size=5, unique=True))
    if "max_tokens" not in names:  # keep valid requests short
        names.append("max_tokens")
    return [draw(raw_tensor(name)) for name in names]


@st.composite
def chat_request(draw) -> list[tuple[str, str, list[int], bytes]]:
    """A well-formed chat whose text is hostile (control characters, surrogates, special tokens)."""
    question = draw(nasty_text.filter(lambda s: s.strip()).map(lambda s: s[:3000]))
    history = draw(st.lists(st.tuples(nasty_text.map(lambda s: s[:200]), nasty_text.map(lambda s: s[:200])),
                            max_size=2))
    turns = [t for q, a in history for t in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    body = json.dumps([*turns, {"role": "user", "content": question}], ensure_ascii=draw(st.booleans()))
    tensors = [("messages", "BYTES", [1, 1], _bytes_elements([body.encode("utf-8", "surrogatepass")])),
               ("max_tokens", "INT32", [1, 1], struct.pack("<i", draw(st.sampled_from([1, 2]))))]
    if draw(st.booleans()):
        tensors.append(draw(raw_tensor(draw(st.sampled_from(["temperature", "top_p", "stop_words", "stream"])))))
    return tensors


def _ask(stub, tensors) -> str | None:
    """Send one streamed request; the error message, or None when it was answered."""
    request = service_pb2.ModelInferRequest(model_name="ensemble", id=uuid.uuid4().hex)
    for name, datatype, shape, raw in tensors:
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, datatype
        tensor.shape.extend(shape)
        request.raw_input_contents.append(raw)
    for response in stub.ModelStreamInfer(iter([request]), timeout=60):
        if response.error_message:
            return response.error_message
        if response.infer_response.parameters["triton_final_response"].bool_param:
            return None
    return None


@pytest.mark.server
def test_fuzzed_requests_through_the_server_are_answered_or_rejected_naming_the_field(triton_server):
    channel = grpc.insecure_channel(triton_server.grpc_url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    outcomes = {"answered": 0, "rejected": 0}

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.one_of(raw_request(), chat_request()))
    def one(tensors):
        message = _ask(stub, tensors)
        if message is None:
            outcomes["answered"] += 1
            return
        outcomes["rejected"] += 1
        names = [name for name, *_ in tensors] + ["messages", "text_input"]
        assert any(name in message for name in names), message
        for internal in ("Traceback", "Error:", "Exception", "Stub process", "Failed to process"):
            assert internal not in message, message

    one()
    assert outcomes["answered"] and outcomes["rejected"], outcomes
    ready = stub.ModelReady(service_pb2.ModelReadyRequest(name="ensemble"), timeout=10)
    assert ready.ready
    channel.close()
