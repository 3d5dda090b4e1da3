"""The rendered `tensorrt_llm` model against what the pinned TensorRT-LLM backend reads (build_engine/pins.py).

TensorRT-LLM cannot run here, so these checks stand in for Triton loading the model: a parameter the
backend reads without a fallback must be declared, a value must parse as the backend parses it (a
value that does not parse silently becomes the default), and every input must carry a name and dtype
the backend knows (an unknown name is silently ignored by it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from build_engine import pins
from serving.render import RenderError, parameters_for, render_repository
from wingpt.settings import ServerSettings

ENGINE = "/engines/wingpt2-7b_int4awq-g128_kv-bf16_tp1_bs64_seq4096/engine"


def rendered(tmp_path: Path, **extra: str) -> model_config_pb2.ModelConfig:
    params = {**parameters_for(ServerSettings(target="gpu-trtllm"), "/models/WiNGPT2-7B-Chat", embedded=False),
              "engine_dir": ENGINE, **extra}
    repo = render_repository("gpu-trtllm", tmp_path / "repo", params)
    text = (repo / "tensorrt_llm" / "config.pbtxt").read_text(encoding="utf-8")
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def parses_as(kind: str, value: str) -> bool:
    """Whether ModelState::GetParameter<kind> accepts `value` (std::stoi / std::stof / the bool strings)."""
    try:
        if kind == "bool":
            return value in pins.TRTLLM_BOOL_VALUES
        if kind == "int":
            int(value)
        elif kind == "float":
            float(value)
        elif kind == "int_list":
            [int(v) for v in value.split(",")]
    except ValueError:
        return False
    return True


def test_every_parameter_the_backend_requires_is_declared(tmp_path):
    declared = set(rendered(tmp_path).parameters)
    assert declared >= pins.TRTLLM_REQUIRED_PARAMETERS, pins.TRTLLM_REQUIRED_PARAMETERS - declared


def test_every_declared_parameter_is_one_the_backend_reads_and_parses(tmp_path):
    params = {k: v.string_value for k, v in rendered(tmp_path).parameters.items()}
    unknown = sorted(set(params) - set(pins.TRTLLM_PARAMETER_TYPES))
    assert not unknown, f"parameters the pinned backend never reads (a typo?): {unknown}"
    for name, value in params.items():
        assert "${" not in value, f"{name} left unrendered: {value!r}"
        assert parses_as(pins.TRTLLM_PARAMETER_TYPES[name], value), f"{name}={value!r} would fall back silently"
    assert params["gpt_model_type"] in pins.TRTLLM_MODEL_TYPES
    assert params["batch_scheduler_policy"] in pins.TRTLLM_SCHEDULER_POLICIES
    assert params["gpt_model_path"] == ENGINE


def test_guided_decoding_is_declared_off(tmp_path):
    """Empty backend and info path make getGuidedDecodingConfigFromParams() return no config."""
    params = rendered(tmp_path).parameters
    assert params["guided_decoding_backend"].string_value == ""
    assert params["xgrammar_tokenizer_info_path"].string_value == ""


def test_every_input_and_output_has_the_name_and_dtype_the_backend_reads(tmp_path):
    config = rendered(tmp_path)
    dtype = model_config_pb2.DataType.Name
    inputs = {t.name: dtype(t.data_type) for t in config.input}
    outputs = {t.name: dtype(t.data_type) for t in config.output}
    assert {n: inputs[n] for n in inputs if n in pins.TRTLLM_INPUTS} == {
        n: pins.TRTLLM_INPUTS[n] for n in inputs if n in pins.TRTLLM_INPUTS}
    assert set(inputs) <= set(pins.TRTLLM_INPUTS), set(inputs) - set(pins.TRTLLM_INPUTS)
    assert outputs == pins.TRTLLM_OUTPUTS
    assert set(pins.TRTLLM_SEED_INPUTS) <= set(inputs), "the seed must be accepted under both release names"
    assert "priority" not in inputs  # the pinned backend has no request-priority input


def test_the_engine_queue_limit_is_where_the_backend_reads_it(tmp_path):
    """getExecutorConfigFromParams() takes the executor's max queue size from the dynamic batcher's policy."""
    settings = ServerSettings(target="gpu-trtllm")
    assert rendered(tmp_path).dynamic_batching.default_queue_policy.max_queue_size == settings.max_queue_size


@pytest.mark.parametrize("value", ["", "  "])
def test_rendering_without_an_engine_directory_names_the_setting(tmp_path, value):
    params = parameters_for(ServerSettings(target="gpu-trtllm"), "/m", embedded=False)
    with pytest.raises(RenderError, match=r"engine_dir.*--set engine_dir="):
        render_repository("gpu-trtllm", tmp_path / "repo", {**params, "engine_dir": value})
    with pytest.raises(RenderError, match="engine_dir"):
        render_repository("gpu-trtllm", tmp_path / "repo", params)
