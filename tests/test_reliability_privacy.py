"""Patient text never reaches the server's log at the default log level; request metadata does."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from wingpt_client import InvalidRequestError, WingptClient

pytestmark = pytest.mark.server


def test_prompts_and_answers_never_reach_the_server_log(triton_server):
    marker = uuid.uuid4().hex[:12]
    complaint = f"我叫{marker}，胸口疼了两天，出冷汗"
    with WingptClient(triton_server.grpc_url) as c:
        stream = c.stream_chat(complaint, max_tokens=12, temperature=0)
        answer = "".join(stream)
        request_id = stream.request_id
        assert c.chat([{"role": "system", "content": complaint}, {"role": "user", "content": complaint}],
                      max_tokens=8)
        with pytest.raises(InvalidRequestError):
            c.chat([{"role": "doctor", "content": complaint}])
        with pytest.raises(InvalidRequestError):
            c.chat(complaint * 200, max_tokens=200)  # too long for the test server's 512-token window
        with pytest.raises(InvalidRequestError):
            c.chat(complaint, top_p=2.0)
    deadline = time.monotonic() + 10
    while f"request {request_id}:" not in triton_server.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = triton_server.log_text()
    assert marker not in log
    assert "胸口疼" not in log
    assert len(answer) >= 4 and answer not in log
    line = next(line for line in log.splitlines() if f"request {request_id}:" in line)
    assert re.search(r'engine_id=\S+ triage=\w+ prompt_tokens=\d+ priority=\w+ output_tokens=12 finish=length '
                     r'first_text_ms=\d+ total_ms=\d+"?$', line), line
