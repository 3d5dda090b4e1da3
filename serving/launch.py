"""Run the real `tritonserver` binary that the nvidia-pytriton wheel ships.

The wheel carries the server, its Python backend and one `triton_python_backend_stub` per Python
version; we assemble a backend directory with the stub for this interpreter, point the loader at
the wheel's bundled libraries, and put this project and the virtual environment on PYTHONPATH so
the models can import `wingpt`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import site
import socket
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


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for test servers, benchmarks and loopback load runs)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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


def stop_server(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM, up to `timeout_s` for Triton's own drain, then SIGKILL to the whole process group: a
    tritonserver killed alone leaves its python backend stubs running (they hold memory and ports)."""
    if timeout_s > 0:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # start_server gives the server its own process group
    process.wait()


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


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc: no `ps` needed in slim containers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return children


def python_models(repository: Path) -> list[str]:
    """The models of a rendered repository that run in a Python-backend stub process."""
    return sorted(config.parent.name for config in repository.glob("*/config.pbtxt")
                  if 'backend: "python"' in config.read_text(encoding="utf-8"))


def stub_pids(server_pid: int, model: str) -> list[int]:
    """The Python-backend stub processes of `model` (their command line names the model's directory)."""
    found = []
    for pid in child_pids(server_pid):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(f"{os.sep}{model}{os.sep}".encode() in arg for arg in args):
            found.append(pid)
    return found


def rss_kib(pids: list[int]) -> int:
    """Resident memory of these processes together."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def engine_requests(settings: ServerSettings) -> float | None:
    """Requests running or waiting in the engine, from its `nv_trt_llm_request_metrics` gauges
    (both engines export them); None when the metrics cannot be read."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    try:
        with urllib.request.urlopen(f"http://{host}:{settings.metrics_port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("nv_trt_llm_request_metrics{") and any(
                f'request_type="{kind}"' in line for kind in ("active", "waiting")):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Sidecar:
    """A process that serves beside tritonserver as a client of it (the OpenAI-compatible endpoint):
    started once Triton is ready, restarted when it dies, stopped after the engine has drained.

    It keeps running while tritonserver restarts (its gRPC channel reconnects by itself), so clients
    of the sidecar see the same UNAVAILABLE answers as direct gRPC clients do during a restart.
    """

    def __init__(self, name: str, command: list[str], ready_url: str, log_path: Path | None = None,
                 stop_timeout_s: float = 30.0) -> None:
        self.name, self.command, self.ready_url, self.log_path = name, command, ready_url, log_path
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        out = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - handed to the child process
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get(
            "PYTHONPATH")]))}
        self.process = subprocess.Popen(self.command, env=env, cwd=PROJECT_ROOT, stdout=out,
                                        stderr=subprocess.STDOUT if out else None, start_new_session=True)
        if out:
            out.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.process.returncode} before serving")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{self.name} not serving after {timeout_s:.0f}s ({self.ready_url})")

    def died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def begin_stop(self) -> None:
        """SIGTERM: it stops accepting connections and finishes the answers it is streaming."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def stop(self) -> None:
        if self.process is None:
            return
        self.begin_stop()
        try:
            self.process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Supervisor:
    """Keeps the server serving: restarts tritonserver when it dies or when the engine model's
    process does, and drains the engine before stopping it.

    Triton 2.51's Python backend does not restart a dead stub: requests to it fail with "Stub
    process is not healthy" and requests it was generating never end. Restarting the whole server
    ends those streams with a broken connection (clients see UNAVAILABLE) and brings the engine back
    without opening Triton's model-control API. Too many restarts in a row give up (exit 1), so a
    server that cannot start is left to the process manager instead of looping. A broken engine
    stops its own tritonserver (wingpt/engine/faults.py); that exit is restarted like any other.

    SIGTERM is not passed straight on: once tritonserver is stopping, Triton 2.51 refuses every new
    inference request, including the orchestrator's engine request for a chat that has just arrived,
    so answers in progress are let finish first. The supervisor first waits (up to
    TRITON_EXIT_TIMEOUT) until the engine has no running or waiting request, then stops Triton.
    A `sidecar` (the OpenAI-compatible endpoint) is told to stop first, so it takes no new requests
    while the ones it is streaming drain through the engine.
    """

    def __init__(self, repo: Path, settings: ServerSettings, log_path: Path | None = None,
                 check_every_s: float = 0.5, max_restarts: int = 5,
                 restart_window_s: float = 600.0, sidecar: Sidecar | None = None) -> None:
        self.repo, self.settings, self.log_path = repo, settings, log_path
        self.watched = python_models(repo)  # the orchestrator, and torch_llm where it is the engine
        self.sidecar = sidecar
        self.check_every_s = check_every_s
        self.max_restarts, self.restart_window_s = max_restarts, restart_window_s
        self.process: subprocess.Popen | None = None
        self.restarts: list[float] = []
        self._stopping = False
        self._drain_deadline: float | None = None

    def start(self) -> None:
        self.process = start_server(self.repo, self.settings, self.log_path)
        wait_ready(self.settings, self.process)
        if self.sidecar is not None and self.sidecar.process is None:
            self.sidecar.start()

    def terminate(self) -> None:
        """SIGTERM (safe from a signal handler): drain the engine, then stop Triton (see the class doc)."""
        self._stopping = True
        self._drain_deadline = time.monotonic() + self.settings.exit_timeout_s

    def _stop_after_drain(self) -> int:
        assert self.process is not None and self._drain_deadline is not None
        print(f"supervisor: SIGTERM; letting the engine finish its requests "
              f"(up to {self.settings.exit_timeout_s}s)", file=sys.stderr, flush=True)
        if self.sidecar is not None:
            self.sidecar.begin_stop()
        idle_reads = 0  # the engine's gauges are published every 0.2 s: idle must be seen over 0.5 s
        while self.process.poll() is None and time.monotonic() < self._drain_deadline and idle_reads < 3:
            idle_reads = idle_reads + 1 if not engine_requests(self.settings) else 0  # 0 or None (no metrics)
            time.sleep(0.25)
        if self.process.poll() is None:
            self.process.terminate()
        code = self.process.wait()
        if self.sidecar is not None:
            self.sidecar.stop()
        return code

    def _dead_models(self) -> list[str]:
        assert self.process is not None
        return [model for model in self.watched if not stub_pids(self.process.pid, model)]

    def run(self) -> int:
        """Supervise until terminated; returns tritonserver's exit code."""
        assert self.process is not None
        while True:
            try:
                code = self.process.wait(timeout=self.check_every_s)
            except subprocess.TimeoutExpired:
                code = None
            if self._stopping:
                return self._stop_after_drain()
            if code is None and self.sidecar is not None and self.sidecar.died():
                if not self._note_restart(f"{self.sidecar.name} exited with code {self.sidecar.process.returncode}"):
                    return 1
                print(f"supervisor: restarting {self.sidecar.name}", file=sys.stderr, flush=True)
                self.sidecar.start()
                continue
            dead = self._dead_models() if code is None else []
            if code is None and not dead:
                continue
            reason = f"tritonserver exited with code {code}" if code is not None else \
                f"the process of model(s) {', '.join(dead)} died"
            if not self._note_restart(reason):
                return 1
            print(f"supervisor: {reason}; restarting tritonserver (in-flight streams end with UNAVAILABLE)",
                  file=sys.stderr, flush=True)
            self._kill()
            if self._stopping:
                return 0
            self.start()

    def _note_restart(self, reason: str) -> bool:
        """Count a restart; False (everything stopped) when there were too many in the window."""
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < self.restart_window_s] + [now]
        if len(self.restarts) <= self.max_restarts:
            return True
        print(f"supervisor: {reason}; {self.max_restarts} restarts in {self.restart_window_s:.0f}s, "
              "giving up", file=sys.stderr, flush=True)
        self._kill()
        if self.sidecar is not None:
            self.sidecar.stop()
        return False

    def _kill(self) -> None:
        """Kill the server and its stubs (one process group): the dead engine's streams cannot drain."""
        assert self.process is not None
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
