"""`python -m ui`'s configuration and conversation rules, without a browser or a server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ui import text
from ui.chat import Exchange, model_messages
from ui.settings import UiSettings, settings_table
from wingpt.settings import ServerSettings

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"


def test_defaults_follow_the_servers_max_tokens_and_listen_on_localhost():
    s = UiSettings.from_args([], environ={})
    assert (s.host, s.port) == ("127.0.0.1", 7860)
    assert (s.max_tokens_default, s.max_tokens_limit) == (ServerSettings.max_tokens_default,
                                                          ServerSettings.max_tokens_limit)
    assert s.concurrency > 1, "Gradio's default of 1 would queue every patient behind one"
    assert s.client.url == "127.0.0.1:8001" and not s.client.ssl


def test_the_helm_charts_command_line_and_environment_are_understood(tmp_path):
    """The exact flags helm/wingpt passes (values.yaml triton.tls.clientFlags, mutual TLS on)."""
    flags = yaml.safe_load((ROOT / "helm/wingpt/values.yaml").read_text())["triton"]["tls"]["clientFlags"]
    argv = ["--triton-url", "wingpt-triton:8001", flags["ssl"],
            f"{flags['rootCertificates']}={tmp_path}/ca.crt", f"{flags['privateKey']}={tmp_path}/tls.key",
            f"{flags['certificateChain']}={tmp_path}/tls.crt"]
    s = UiSettings.from_args(argv, environ={"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7860"})
    assert (s.host, s.port) == ("0.0.0.0", 7860)
    assert s.client.url == "wingpt-triton:8001" and s.client.ssl
    assert s.client.root_certificates == f"{tmp_path}/ca.crt"
    assert (s.client.private_key, s.client.certificate_chain) == (f"{tmp_path}/tls.key", f"{tmp_path}/tls.crt")


def test_flags_win_over_the_environment():
    env = {"WINGPT_URL": "env-host:1", "WINGPT_UI_CONCURRENCY": "8", "GRADIO_SERVER_PORT": "9000",
           "WINGPT_TOKEN": "secret"}
    s = UiSettings.from_args(["--triton-url", "flag-host:2", "--concurrency", "200"], environ=env)
    assert (s.client.url, s.concurrency, s.port) == ("flag-host:2", 200, 9000)
    assert s.client.metadata() == (("triton-grpc-protocol-wingpt-token", "secret"),)


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--concurrency", "0"], {}, "concurrency must be >= 1"),
    ([], {"GRADIO_SERVER_PORT": "http"}, "--port / GRADIO_SERVER_PORT: not a valid int: 'http'"),
    (["--max-tokens", "600", "--max-tokens-limit", "512"], {}, "need 0 < max tokens (600) <= max tokens limit"),
    (["--log-level", "chatty"], {}, "log level must be one of"),
    (["--private-key", "k.pem"], {}, "need ssl=True"),
])
def test_bad_settings_are_refused_naming_what_is_wrong(argv, env, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        UiSettings.from_args(argv, environ=env)


def test_the_command_exits_with_a_clear_message_on_bad_settings():
    done = subprocess.run([sys.executable, "-m", "ui", "--port", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "python -m ui: port must be 1..65535, got 0" in done.stderr


def test_docs_list_every_setting():
    doc = (ROOT / "docs/ui.md").read_text()
    for flag, env, _default, _help in settings_table():
        assert f"`{flag}`" in doc and f"`{env}`" in doc, flag


@pytest.mark.skipif(not SEEDS.is_dir(), reason="the seed documents (../shared/seeds) are not beside this checkout")
def test_the_examples_are_the_seed_deployments_comparison_questions():
    seed = next(SEEDS.glob("000_*.txt")).read_text(encoding="utf-8")
    comparison = seed.split("## 性能对比", 1)[1]
    questions = re.findall(r"^\d+\. (.+)$", comparison, flags=re.MULTILINE)
    assert tuple(q.strip() for q in questions) == text.EXAMPLES


def test_the_model_sees_questions_and_its_own_answers_never_notices_or_errors():
    conversation = [
        Exchange("我胸口剧痛", answer="", notice="请立即拨打120"),  # the hospital stopped generation: kept
        Exchange("头疼怎么办", answer="多休息", notice=""),
        Exchange("还有呢", error=text.ERROR_UNAVAILABLE),  # never reached the model: left out
        Exchange("发烧了", answer="多喝", error=text.STOPPED),  # stopped midway: the part shown is kept
    ]
    assert model_messages(conversation) == [
        {"role": "user", "content": "我胸口剧痛"},
        {"role": "user", "content": "头疼怎么办"},
        {"role": "assistant", "content": "多休息"},
        {"role": "user", "content": "发烧了"},
        {"role": "assistant", "content": "多喝"},
    ]
