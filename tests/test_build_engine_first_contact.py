"""The first-contact check: its arguments, its table, and its engine-independent checks run for real
against the session's CPU server (the same ensemble and metrics the TensorRT-LLM repository exposes).
Starting the container's tritonserver on a TensorRT-LLM engine needs the GPU host and is not run here."""

from __future__ import annotations

import pytest

from build_engine import first_contact
from build_engine.first_contact import Result, table
from serving.render import parameters_for, render_repository
from wingpt.settings import ServerSettings


def test_the_table_passes_only_when_every_check_passes():
    good = [Result("server ready", True, "ensemble"), Result("overload answered as overload", True, "3 of 24")]
    assert table(good).splitlines()[-1] == "ALL CHECKS PASSED"
    bad = [*good, Result("emergency triage notice", False, "no notice")]
    text = table(bad)
    row = next(line for line in text.splitlines() if line.startswith("emergency triage notice"))
    assert " FAIL " in row and row.endswith("no notice")
    assert text.splitlines()[-1] == "FAILED: emergency triage notice"


@pytest.mark.parametrize(("argv", "message"), [
    ([], "one of the arguments --repo --url is required"),
    (["--url", "127.0.0.1:1"], "--url needs --metrics-url"),
    (["--repo", "/nonexistent"], "not a rendered model repository"),
    (["--url", "h:1", "--metrics-url", "http://h:2/metrics", "--flood", "-1"], "--flood must be >= 0"),
])
def test_bad_arguments_are_refused_with_the_reason(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        first_contact.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_the_flood_is_twice_what_the_rendered_engine_takes_at_once(tmp_path):
    settings = ServerSettings(target="gpu-trtllm", max_batch_size=16, max_queue_size=32)
    params = {**parameters_for(settings, "/m", embedded=False), "engine_dir": "/e"}
    repo = render_repository("gpu-trtllm", tmp_path / "repo", params)
    assert first_contact.default_flood(repo) == 2 * (16 + 32)


def test_without_the_containers_tritonserver_it_says_where_to_run(tmp_path, capsys):
    settings = ServerSettings(target="gpu-trtllm")
    repo = render_repository("gpu-trtllm", tmp_path / "repo",
                             {**parameters_for(settings, "/m", embedded=False), "engine_dir": "/e"})
    assert first_contact.main(["--repo", str(repo), "--tritonserver", "no-such-tritonserver"]) == 2
    assert "run inside the pinned Triton container" in capsys.readouterr().err


def test_the_engine_independent_checks_pass_against_a_real_server(triton_server):
    url, metrics = triton_server.grpc_url, triton_server.metrics_url
    from wingpt_client import WingptClient

    with WingptClient(url) as client:
        triage = first_contact._run("emergency triage notice", lambda: first_contact.check_triage(client))
        cancel = first_contact._run("cancel frees the engine slot",
                                    lambda: first_contact.check_cancel_frees_slot(client, metrics, timeout_s=120))
    overload = first_contact._run("overload answered as overload", lambda: first_contact.check_overload(url, 24))
    assert triage.ok, triage
    assert cancel.ok, cancel
    assert overload.ok, overload
    assert "refused as overload" in overload.detail


def test_it_refuses_to_pass_a_repository_serving_the_random_weight_model(triton_server, capsys):
    """The session server runs the embedded smoke-test model: the first check fails and says so."""
    if triton_server.settings.model_dir:
        pytest.skip("MODEL_DIR is set: the session server serves real weights")
    code = first_contact.main(["--url", triton_server.grpc_url, "--metrics-url", triton_server.metrics_url])
    out = capsys.readouterr().out
    assert code == 1
    assert "server ready" in out and "embedded random-weight model" in out
    assert out.strip().splitlines()[-1] == "FAILED: server ready"
