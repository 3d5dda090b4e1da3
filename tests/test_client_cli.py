"""`wingpt-chat` as a user runs it: a separate process, stdout for answers, stderr and exit status for trouble."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from wingpt_client import WingptClient
from wingpt_client.cli import EXIT_INVALID, EXIT_UNAVAILABLE

pytestmark = pytest.mark.server

QUESTION = "宝宝15个月37.3度算发烧吗？"
FOLLOW_UP = "那要吃退烧药吗？"
GREEDY_FLAGS = ["--temperature", "0", "--max-tokens", "8"]


def wingpt_chat(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wingpt_client.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def direct(triton_server):
    with WingptClient(triton_server.grpc_url) as c:
        yield c


def test_one_shot_streams_the_answer_to_stdout(triton_server, direct):
    result = wingpt_chat("--url", triton_server.grpc_url, *GREEDY_FLAGS, QUESTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout == direct.chat(QUESTION, temperature=0, max_tokens=8) + "\n"
    assert result.stderr == ""


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "wingpt-chat"
    assert script.exists() or shutil.which("wingpt-chat")
    assert subprocess.run([str(script), "--help"], capture_output=True, text=True).returncode == 0


def test_json_output(triton_server, direct):
    result = wingpt_chat("--url", triton_server.grpc_url, "--json", *GREEDY_FLAGS, QUESTION)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["text"] == direct.chat(QUESTION, temperature=0, max_tokens=8)
    assert re.fullmatch(r"[0-9a-f]{32}", record["request_id"])
    assert 0 < record["ttft_s"] <= record["elapsed_s"]


def test_prompt_from_stdin_and_url_from_the_environment(triton_server, direct, monkeypatch):
    monkeypatch.setenv("WINGPT_URL", triton_server.grpc_url)
    result = wingpt_chat(*GREEDY_FLAGS, "-", stdin=QUESTION + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == direct.chat(QUESTION, temperature=0, max_tokens=8) + "\n"


def test_interactive_mode_keeps_the_conversation_until_reset(triton_server, direct):
    result = wingpt_chat("--url", triton_server.grpc_url, "--json", *GREEDY_FLAGS, "-i",
                         stdin=f"{QUESTION}\n{FOLLOW_UP}\n/reset\n{FOLLOW_UP}\n/exit\nnot asked\n")
    assert result.returncode == 0, result.stderr
    first, second, after_reset = (json.loads(line)["text"] for line in result.stdout.splitlines())
    greedy = {"temperature": 0, "max_tokens": 8}
    assert first == direct.chat(QUESTION, **greedy)
    history = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": first},
               {"role": "user", "content": FOLLOW_UP}]
    assert second == direct.chat(history, **greedy)
    assert after_reset == direct.chat(FOLLOW_UP, **greedy) != second
    assert "random weights" in result.stderr, "the embedded smoke-test model is announced"


def test_server_down_exits_3_with_a_clear_message():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"127.0.0.1:{s.getsockname()[1]}"
    for args in ([QUESTION], ["-i"], ["--info"]):
        result = wingpt_chat("--url", url, "--retries", "0", *args, stdin="")
        assert result.returncode == EXIT_UNAVAILABLE == 3
        assert result.stdout == ""
        assert f"cannot reach the WiNGPT2 server at {url}" in result.stderr
        assert "Traceback" not in result.stderr


def test_refused_request_exits_4_with_the_servers_message(triton_server):
    result = wingpt_chat("--url", triton_server.grpc_url, "--max-tokens", "0", QUESTION)
    assert result.returncode == EXIT_INVALID == 4
    assert result.stderr.strip() == "wingpt-chat: the server refused the request: max_tokens: must be > 0, got 0"


def test_bad_arguments_exit_2():
    assert wingpt_chat("--private-key", "client.key", QUESTION).returncode == 2
    assert "need ssl=True" in wingpt_chat("--private-key", "k", "--certificate-chain", "c", QUESTION).stderr
    assert wingpt_chat("--max-tokens", "many", QUESTION).returncode == 2
    assert wingpt_chat("-i", QUESTION).returncode == 2


def test_info_reports_health_and_model(triton_server):
    result = wingpt_chat("--url", triton_server.grpc_url, "--info")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["health"]["ok"] is True
    assert info["model"]["name"] == "ensemble" and info["model"]["embedded_default"] is True


def test_an_emergency_notice_is_printed_above_the_answer(triton_server, direct):
    chest_pain = "我胸口剧痛，一直出冷汗，左臂发麻"
    with direct.stream_chat(chest_pain, temperature=0, max_tokens=8) as s:
        answer = "".join(s)
        notice = s.triage.notice
    result = wingpt_chat("--url", triton_server.grpc_url, *GREEDY_FLAGS, chest_pain)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{notice}\n\n{answer}\n"
    record = json.loads(wingpt_chat("--url", triton_server.grpc_url, "--json", *GREEDY_FLAGS, chest_pain).stdout)
    assert record["triage"]["level"] == "emergency" and record["triage"]["categories"] == ["chest_pain_acs"]
