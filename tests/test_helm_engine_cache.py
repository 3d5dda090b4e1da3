"""The engine cache of the chart: helm/wingpt/files/prepare-engine.sh, run by POSIX sh as in the pods.

A TensorRT-LLM build takes GPU-minutes to hours, so the promise is: built once per checkpoint + settings, reused by
every replica and restart, never half-built, and never blocked for good by a pod that died while building. The
script runs for real here; only `python3 -m build_engine` is replaced by a stand-in that records its calls and
writes a fake engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "helm" / "wingpt" / "files" / "prepare-engine.sh"
BUILD_INFO = json.dumps({"model": "WiNGPT2-7B-Chat", "settings": {"qformat": "int4_awq"}})

FAKE_BUILD_ENGINE = r"""#!/bin/sh
# Stand-in for `python3 -m build_engine --model-dir D --output-root R [flags]`: records the call, then fails, or
# builds slowly into R/<name after the settings>/ as the real one does.
echo "$*" >>"$CALLS"
[ -n "${FAIL_BUILD:-}" ] && { echo "build_engine: error: out of GPU memory" >&2; exit 1; }
sleep "${BUILD_SECONDS:-0}"
while [ $# -gt 0 ]; do
  [ "$1" = --output-root ] && root=$2
  shift
done
mkdir -p "$root/wingpt2-7b-chat_int4awq-g128_kv-bf16_tp1_bs64_seq4096/engine"
echo engine >"$root/wingpt2-7b-chat_int4awq-g128_kv-bf16_tp1_bs64_seq4096/engine/rank0.engine"
echo '{"engine": "wingpt2-7b-chat_int4awq-g128_kv-bf16_tp1_bs64_seq4096"}' \
  >"$root/wingpt2-7b-chat_int4awq-g128_kv-bf16_tp1_bs64_seq4096/build.json"
"""


class Cache:
    """An engine cache directory and a way to run the script against it, as one pod would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.engine_dir = root / "cache" / "wingpt2-7b-chat-0a1ff612ff7a0733"
        self.engine_dir.parent.mkdir()
        self.calls = root / "calls.log"
        self.calls.touch()
        bin_dir = root / "bin"
        bin_dir.mkdir()
        (bin_dir / "python3").write_text(FAKE_BUILD_ENGINE)
        (bin_dir / "python3").chmod(0o755)
        self.path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"

    def start(self, mode: str, pod: str = "wingpt-triton-abc12", **env: str) -> subprocess.Popen[str]:
        full_env = {"PATH": self.path, "CALLS": str(self.calls), "ENGINE_DIR": str(self.engine_dir),
                    "CHECKPOINT_DIR": "/checkpoint", "BUILD_INFO": BUILD_INFO, "HOSTNAME": pod,
                    "POLL_SECONDS": "1", **env}
        return subprocess.Popen(["/bin/sh", str(SCRIPT), mode, "--tp", "1", "--quant", "int4_awq"],
                                env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, mode: str, pod: str = "wingpt-triton-abc12", **env: str) -> subprocess.CompletedProcess[str]:
        proc = self.start(mode, pod, **env)
        stdout, stderr = proc.communicate(timeout=60)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def builds(self) -> list[str]:
        return self.calls.read_text().splitlines()

    @property
    def lock(self) -> Path:
        return self.engine_dir.with_name(self.engine_dir.name + ".lock")


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path)


def test_first_start_builds_the_engine_and_later_starts_reuse_it(cache: Cache) -> None:
    first = cache.run("build")
    assert first.returncode == 0, first.stderr
    # build_engine's directory became the cache entry: Triton loads <entry>/engine.
    assert (cache.engine_dir / "engine" / "rank0.engine").read_text() == "engine\n"
    assert (cache.engine_dir / "build.json").exists()
    assert (cache.engine_dir / "BUILD_COMPLETE").exists()
    assert json.loads((cache.engine_dir / "build-info.json").read_text()) == json.loads(BUILD_INFO)
    assert cache.builds() == [f"-m build_engine --model-dir /checkpoint --output-root {cache.engine_dir}.partial "
                              "--tp 1 --quant int4_awq"]
    assert not cache.lock.exists()
    assert not cache.engine_dir.with_name(cache.engine_dir.name + ".partial").exists()

    again = cache.run("build", pod="wingpt-triton-other")
    assert again.returncode == 0
    assert "cache hit" in again.stderr
    assert len(cache.builds()) == 1


def test_replicas_starting_together_build_the_engine_once(cache: Cache) -> None:
    pods = [cache.start("build", pod=f"wingpt-triton-{i}", BUILD_SECONDS="2") for i in range(3)]
    results = [p.communicate(timeout=60) for p in pods]
    assert [p.returncode for p in pods] == [0, 0, 0], results
    assert len(cache.builds()) == 1
    assert sum("is building" in stderr for _, stderr in results) >= 1, "the others waited for the builder"
    assert (cache.engine_dir / "BUILD_COMPLETE").exists() and not cache.lock.exists()


def test_a_failed_build_leaves_no_engine_and_frees_the_lock_for_a_retry(cache: Cache) -> None:
    failed = cache.run("build", FAIL_BUILD="1")
    assert failed.returncode != 0
    assert "out of GPU memory" in failed.stderr
    assert not cache.engine_dir.exists(), "a half-built engine must never look complete"
    assert not cache.lock.exists()

    retry = cache.run("build")
    assert retry.returncode == 0, retry.stderr
    assert (cache.engine_dir / "BUILD_COMPLETE").exists()
    assert len(cache.builds()) == 2


def test_the_lock_of_a_pod_killed_mid_build_expires_after_the_build_timeout(cache: Cache) -> None:
    cache.lock.mkdir()
    (cache.lock / "owner").write_text("wingpt-triton-dead\n")
    an_hour_ago = time.time() - 3600
    os.utime(cache.lock, (an_hour_ago, an_hour_ago))

    result = cache.run("build", TIMEOUT_SECONDS="600")
    assert result.returncode == 0, result.stderr
    assert "removing the lock of wingpt-triton-dead" in result.stderr
    assert len(cache.builds()) == 1


def test_a_pod_whose_build_container_restarted_takes_its_own_lock_back(cache: Cache) -> None:
    cache.lock.mkdir()
    (cache.lock / "owner").write_text("wingpt-triton-abc12\n")
    result = cache.run("build", pod="wingpt-triton-abc12")
    assert result.returncode == 0, result.stderr
    assert len(cache.builds()) == 1


def test_prebuilt_mode_fails_at_once_and_says_how_to_provide_the_engine(cache: Cache) -> None:
    result = cache.run("check")
    assert result.returncode == 1
    assert "engine.build.mode=prebuilt" in result.stderr
    assert cache.builds() == []


def test_replicas_of_job_mode_start_once_the_job_has_filled_the_cache(cache: Cache) -> None:
    def job_finishes() -> None:
        time.sleep(1.5)
        cache.engine_dir.mkdir()
        (cache.engine_dir / "BUILD_COMPLETE").touch()

    job = threading.Thread(target=job_finishes)
    job.start()
    result = cache.run("wait", TIMEOUT_SECONDS="30")
    job.join()
    assert result.returncode == 0, result.stderr
    assert "engine ready" in result.stderr
    assert cache.builds() == [], "waiting replicas never build"


def test_waiting_gives_up_after_the_timeout_and_points_at_the_job(cache: Cache) -> None:
    result = cache.run("wait", TIMEOUT_SECONDS="0")
    assert result.returncode == 1
    assert "see the logs of the engine-build Job" in result.stderr
