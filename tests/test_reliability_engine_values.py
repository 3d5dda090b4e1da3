"""Extreme numeric inputs reach the engine and never take it down (issue 15).

Every value validation accepts is served, every other is refused naming its field, and after each
one an ordinary chat is answered: once a chat with temperature 1e-37 made the sampler's
probabilities NaN, ended the engine thread and left every later patient with `[UNAVAILABLE]`.
Driven through Triton's HTTP generate endpoint of the public `ensemble` model, which carries every
numeric input (pad_id included) as plain JSON.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.server

MESSAGES = json.dumps([{"role": "user", "content": "头痛怎么办？"}], ensure_ascii=False)
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.401298464324817e-45  # the smallest positive (denormal) float32
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
UINT64_MAX = 2**64 - 1

# Each is served (validation accepts it) or refused naming its field; none may break the engine.
POISON = [
    ({"temperature": 1e-37}, "served"),
    ({"temperature": FLOAT32_TINY}, "served"),
    ({"temperature": FLOAT32_MAX}, "served"),
    ({"temperature": 1e-37, "repetition_penalty": FLOAT32_TINY}, "served"),
    ({"temperature": 1.0, "repetition_penalty": FLOAT32_TINY}, "served"),
    ({"temperature": 1.0, "repetition_penalty": FLOAT32_MAX}, "served"),
    ({"repetition_penalty": 1e-38}, "served"),
    ({"repetition_penalty": FLOAT32_MAX}, "served"),
    ({"temperature": 1.0, "top_k": INT32_MAX}, "served"),
    ({"temperature": 1.0, "top_k": INT32_MIN}, "refused"),
    ({"temperature": 1.0, "top_p": FLOAT32_TINY}, "served"),
    ({"temperature": FLOAT32_TINY, "top_p": FLOAT32_TINY, "top_k": 2}, "served"),
    ({"temperature": 1.0, "random_seed": UINT64_MAX}, "served"),
    ({"temperature": 1.0, "random_seed": 0}, "served"),
    ({"end_id": INT32_MIN}, "served"),
    ({"end_id": INT32_MAX}, "served"),
    ({"end_id": 0}, "served"),
    ({"pad_id": INT32_MIN}, "served"),
    ({"pad_id": INT32_MAX}, "served"),
    ({"max_tokens": INT32_MAX}, "refused"),
    ({"max_tokens": INT32_MIN}, "refused"),
    ({"max_tokens": 0}, "refused"),
]


def generate(server, values: dict[str, object]) -> tuple[int, dict]:
    """POST /v2/models/ensemble/generate; (HTTP status, JSON body)."""
    body = json.dumps({"messages": MESSAGES, "max_tokens": 4, **values}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.settings.http_port}/v2/models/ensemble/generate",
                                     data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def check_served_or_refused(server, values: dict[str, object]) -> str:
    """The request is answered, or refused naming one of its fields; then an ordinary chat is answered."""
    status, body = generate(server, values)
    if status == 200:
        assert isinstance(body.get("text_output"), str), body
        outcome = "served"
    else:
        message = body.get("error", "")
        assert "[INVALID_ARGUMENT]" in message or "invalid" in message.lower(), (values, message)
        assert any(field in message for field in values), (values, message)
        outcome = "refused"
    status, body = generate(server, {})
    assert status == 200 and body["text_output"], ("the next ordinary chat after", values, body)
    return outcome


@pytest.mark.parametrize(("values", "expected"), POISON,
                         ids=[",".join(f"{k}={v}" for k, v in values.items()) for values, _ in POISON])
def test_each_extreme_value_is_served_or_refused_and_the_next_chat_is_answered(triton_server, values, expected):
    assert check_served_or_refused(triton_server, values) == expected


float32 = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, FLOAT32_TINY, 1e-37, 1e-30, 1e-7, 1.0, 1e7, FLOAT32_MAX, -FLOAT32_TINY, -1.0]),
)
int32 = st.one_of(st.integers(INT32_MIN, INT32_MAX), st.sampled_from([INT32_MIN, -1, 0, 1, 2, INT32_MAX]))
numeric_inputs = st.fixed_dictionaries({}, optional={
    "temperature": float32,
    "top_k": int32,
    "top_p": float32,
    "repetition_penalty": float32,
    "random_seed": st.one_of(st.integers(0, UINT64_MAX), st.sampled_from([0, UINT64_MAX])),
    "end_id": int32,
    "pad_id": int32,
    "max_tokens": st.one_of(st.integers(1, 4), int32),
})


def test_any_numeric_inputs_are_served_or_refused_and_the_next_chat_is_answered(triton_server):
    outcomes = {"served": 0, "refused": 0}

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(numeric_inputs)
    def one(values):
        outcomes[check_served_or_refused(triton_server, values)] += 1

    one()
    assert outcomes["served"] and outcomes["refused"], outcomes
