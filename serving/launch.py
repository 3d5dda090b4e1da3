"""Run the real `tritonserver` binary that the nvidia-pytriton wheel ships.

The wheel carries the server, its Python backend and one `triton_python_backend_stub` per Python
version; we assemble a backend directory with the stub for this interpreter, point the loader at
the wheel's bundled libraries, and put this project and the virtual environment on PYTHONPATH so
the models can import `wingpt`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from wingpt.settings import ServerSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TritonDist:
    binary: Path
    libs: Path
    backends: Path
    stub: Path


def find_triton() -> TritonDist:
    # Located without importing pytriton (its Python API is not used, only the server it ships).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nvidia-pytriton wheel (which ships tritonserver) is not installed")
    root = Path(next(iter(spec.submodule_search_locations))).resolve() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    dist = TritonDist(
        binary=root / "bin" / "tritonserver",
        libs=root.parent.parent / "nvidia_pytriton.libs",
        backends=root / "backends",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
    )
    for path in (dist.binary, dist.libs, dist.backends, dist.stub):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing from the nvidia-pytriton wheel (Python {version})")
    return dist


def prepare_backends(dist: TritonDist, work_dir: Path) -> Path:
    """A backend directory whose python backend has the stub built for this interpreter."""
    backends = work_dir / "backends"
    if backends.exists():
        shutil.rmtree(backends)
    shutil.copytree(dist.backends, backends, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(dist.stub, backends / "python" / "triton_python_backend_stub")
    return backends


def server_env(dist: TritonDist) -> dict[str, str]:
    """The stub must load the libpython of *this* interpreter (whose standard library it will use),
    not whichever libpython3.x the system has, so this interpreter's LIBDIR goes first."""
    env = os.environ.copy()
    libdirs = [sysconfig.get_config_var("LIBDIR") if sysconfig.get_config_var("Py_ENABLE_SHARED") else None]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [*libdirs, str(dist.libs), env.get("LD_LIBRARY_PATH")]))
    # The same order as this interpreter's sys.path: PYTHONPATH entries before site-packages.
    paths = [str(PROJECT_ROOT), env.get("PYTHONPATH"), *site.getsitepackages()]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2))))
    return env


def server_command(dist: TritonDist, backends: Path, repo: Path, settings: ServerSettings) -> list[str]:
    return [
        str(dist.binary),
        f"--model-repository={repo}",
        f"--backend-directory={backends}",
        f"--http-address={settings.host}",
        f"--grpc-address={settings.host}",
        f"--metrics-address={settings.host}",
        f"--http-port={settings.http_port}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-port={settings.metrics_port}",
        "--allow-metrics=true",
        "--metrics-config=histogram_latencies=true",
        "--model-control-mode=none",
        "--disable-auto-complete-config",
        f"--exit-timeout-secs={settings.exit_timeout_s}",
        f"--log-verbose={settings.log_verbose}",
        "--log-info=true",
    ]


def start_server(repo: Path, settings: ServerSettings, log_path: Path | None = None) -> subprocess.Popen:
    """Start tritonserver in the background (stdout/stderr to `log_path` or inherited)."""
    dist = find_triton()
    backends = prepare_backends(dist, repo.parent / f"{repo.name}-triton")
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - handed to the child process
    return subprocess.Popen(
        server_command(dist, backends, repo, settings),
        env=server_env(dist),
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
        start_new_session=True,
    )


def wait_ready(settings: ServerSettings, process: subprocess.Popen, timeout_s: float = 300.0) -> None:
    """Block until Triton's HTTP readiness endpoint says every model is loaded."""
    url = f"http://{settings.host}:{settings.http_port}/v2/health/ready"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tritonserver exited with code {process.returncode} before becoming ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f}s ({url})")
