"""The templating step renders a repository Triton accepts, for every target."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from serving.render import RenderError, parameters_for, render_repository
from wingpt.settings import ServerSettings


@pytest.mark.parametrize("target", ["cpu", "gpu-torch", "gpu-trtllm"])
def test_every_rendered_config_parses_as_a_triton_model_config(tmp_path: Path, target: str) -> None:
    settings = ServerSettings(target=target, system_prompt='你是"分诊"助手\n请简短')
    params = parameters_for(settings, "/models/WiNGPT2-7B-Chat", embedded=False)
    if target == "gpu-trtllm":
        params["engine_dir"] = "/engines/wingpt2-7b_int4awq"
    repo = render_repository(target, tmp_path / "repo", params)
    engine = "tensorrt_llm" if target == "gpu-trtllm" else "torch_llm"
    configs = {}
    for path in repo.glob("*/config.pbtxt"):
        configs[path.parent.name] = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    assert set(configs) == {"ensemble", engine}
    orchestrator = configs["ensemble"]
    assert orchestrator.backend == "python" and not orchestrator.HasField("ensemble_scheduling")
    assert orchestrator.model_transaction_policy.decoupled
    assert orchestrator.parameters["engine_model"].string_value == engine
    assert orchestrator.parameters["system_prompt"].string_value == '你是"分诊"助手\n请简短'
    if target == "gpu-trtllm":
        trt = configs["tensorrt_llm"]
        assert trt.backend == "tensorrtllm"
        assert trt.parameters["gpt_model_type"].string_value == "inflight_fused_batching"
        assert trt.parameters["gpt_model_path"].string_value == "/engines/wingpt2-7b_int4awq"
        assert trt.dynamic_batching.default_queue_policy.max_queue_size == settings.max_queue_size
    else:
        assert configs["torch_llm"].parameters["device"].string_value == settings.device


def test_the_engine_models_expose_the_same_tensors(tmp_path: Path) -> None:
    settings = ServerSettings()
    torch_repo = render_repository("cpu", tmp_path / "a", parameters_for(settings, "/m", embedded=True))
    trt_params = parameters_for(ServerSettings(target="gpu-trtllm"), "/m", embedded=False)
    trt_repo = render_repository("gpu-trtllm", tmp_path / "b", {**trt_params, "engine_dir": "/e"})

    def tensors(path: Path) -> set[tuple[str, int]]:
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        return {(t.name, t.data_type) for t in [*config.input, *config.output]}

    assert tensors(torch_repo / "torch_llm" / "config.pbtxt") == tensors(trt_repo / "tensorrt_llm" / "config.pbtxt")


def test_a_missing_parameter_is_named(tmp_path: Path) -> None:
    params = {**parameters_for(ServerSettings(target="gpu-trtllm"), "/m", embedded=False), "engine_dir": "/e"}
    del params["batch_scheduler_policy"]
    with pytest.raises(RenderError, match="batch_scheduler_policy"):
        render_repository("gpu-trtllm", tmp_path / "repo", params)


def test_settings_reject_inconsistent_limits() -> None:
    with pytest.raises(ValueError, match="WINGPT_MAX_TOKENS_LIMIT"):
        ServerSettings.from_env(max_tokens_limit=9000, context_window=4096)


def test_priority_settings_reach_the_orchestrator_config(tmp_path: Path) -> None:
    settings = ServerSettings(priority_levels="emergency, urgent", priority_reserved=2)
    repo = render_repository("cpu", tmp_path / "repo", parameters_for(settings, "", embedded=True))
    config = text_format.Parse((repo / "ensemble" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.parameters["priority_levels"].string_value == "emergency,urgent"
    assert config.parameters["priority_reserved"].string_value == "2"
    off = parameters_for(ServerSettings(priority_levels="none"), "", embedded=True)
    assert off["priority_levels"] == ""


@pytest.mark.parametrize(("overrides", "variable"), [
    ({"priority_levels": "critical"}, "WINGPT_PRIORITY_LEVELS"),
    ({"priority_levels": "emergency,emergency"}, "WINGPT_PRIORITY_LEVELS"),
    ({"priority_reserved": 65, "max_queue_size": 64}, "WINGPT_PRIORITY_RESERVED"),
])
def test_settings_reject_unknown_priority_levels_and_impossible_reservations(overrides, variable) -> None:
    with pytest.raises(ValueError, match=variable):
        ServerSettings.from_env(**overrides)
