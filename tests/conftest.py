"""One real Triton server (the nvidia-pytriton wheel's `tritonserver`) for the whole test session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from wingpt_client import WingptClient

from serving.launch import free_port
from tests.servers import RunningServer, serve
from wingpt.safety.rules import DEFAULT_RULES
from wingpt.settings import ServerSettings

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"




@pytest.fixture(scope="session")
def triton_server() -> Iterator[RunningServer]:
    OUTPUT.mkdir(exist_ok=True)
    # A copy of the safety rules the tests may edit: the server reloads it without a restart.
    rules_path = OUTPUT / "safety-rules.yaml"
    shutil.copyfile(DEFAULT_RULES, rules_path)
    settings = ServerSettings.from_env(
        target="cpu",
        model_dir=os.environ.get("MODEL_DIR", ""),
        repo_dir=str(ROOT / "build" / "test-model-repository"),
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        max_batch_size=4,
        max_queue_size=8,
        context_window=512,
        max_tokens_default=32,
        max_tokens_limit=256,
        safety_rules=str(rules_path),
        # Many tests compare a greedy answer with the same question asked before, in another cache state; a
        # prefix computed in other chunks can differ in the last float bits and flip the random model's argmax.
        # Prefix reuse itself is specified in tests/test_engine_paged.py.
        enable_kv_cache_reuse=0,
    )
    with serve(settings, OUTPUT / "tritonserver.log") as server:
        yield server


@pytest.fixture(scope="module")
def client(triton_server: RunningServer) -> Iterator[WingptClient]:
    """The product's client on the session server, one per test module (its channel is shared by threads)."""
    with WingptClient(triton_server.grpc_url) as c:
        yield c
