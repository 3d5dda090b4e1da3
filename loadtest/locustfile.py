"""Locust users for WiNGPT2: the Triton deployment over gRPC, and any OpenAI-compatible endpoint.

    locust -f loadtest/locustfile.py --headless --lt-target triton --host 127.0.0.1:8001 \\
        --lt-steps 1,2,4 --lt-step-s 20 --lt-out build/loadtest TritonChatUser

(`python -m loadtest.run`, i.e. `make loadtest`, builds this command, starts a server when none is
given, and writes the report.) Each request fires one Locust `request` event: response_time is the
e2e latency in ms, response_length the output tokens, and `context["record"]` carries the whole
measurement (TTFT, TPOT, ITL inputs) made by loadtest.metrics, the same code the sweep uses. Users
run closed-loop (no think time unless `--lt-think-s`); `StepShape` holds each user count of
`--lt-steps` for `--lt-step-s` seconds, then stops: steady load is a single step. With
`--lt-find-capacity` it searches the knee instead (loadtest/capacity.py): each step's user count comes
from the SLO verdict on the steps before, and the run stops when the search is done.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import gevent
from gevent.event import Event
from grpc.experimental import gevent as grpc_gevent
from locust import LoadTestShape, User, events, task
from wingpt_client import WingptClient

from loadtest.capacity import Search, next_level
from loadtest.metrics import Recorder, RequestRecord, Slo, level_duration_s, summarize
from loadtest.targets import Generation, OpenAIEndpoint, error_text, send_triton_sync, stream_openai
from loadtest.workloads import WORKLOADS, Prompt, build_workload

# grpcio's own threads must yield to gevent's hub, or a streaming call blocks every Locust user.
grpc_gevent.init_gevent()

_records: list[dict] = []
_shared: dict[str, object] = {}
_search_steps: list[dict] = []  # the knee search's verdict on each step, in the order they ran
# The knee search closes the gate at the end of a step, so no user starts a new chat until every chat of the
# step has finished and been judged (as the sweep's workers stop at the end of a level), and opens it once the
# next step's users are all there: every step is judged on all its requests, each tagged with its user count.
_gate = Event()
_in_flight = {"chats": 0}


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    group = parser.add_argument_group("WiNGPT2 load test")
    group.add_argument("--lt-target", choices=("triton", "openai"), default="triton", env_var="LOADTEST_TARGET")
    group.add_argument("--lt-label", default="", help="system name in reports", env_var="LOADTEST_LABEL")
    group.add_argument("--lt-model", default="wingpt2", help="openai: model name", env_var="LOADTEST_MODEL")
    group.add_argument("--lt-api-key-env", default="", help="openai: env var with the API key",
                       env_var="LOADTEST_API_KEY_ENV")
    group.add_argument("--lt-workload", choices=WORKLOADS, default="seed5", env_var="LOADTEST_WORKLOAD")
    group.add_argument("--lt-max-tokens", type=int, default=64, env_var="LOADTEST_MAX_TOKENS")
    group.add_argument("--lt-prompt-tokens", type=int, default=0, env_var="LOADTEST_PROMPT_TOKENS")
    group.add_argument("--lt-temperature", type=float, default=0.0, env_var="LOADTEST_TEMPERATURE")
    group.add_argument("--lt-ignore-eos", action="store_true", env_var="LOADTEST_IGNORE_EOS")
    group.add_argument("--lt-steps", default="1", help="user counts, one step each, e.g. 1,2,4",
                       env_var="LOADTEST_STEPS")
    group.add_argument("--lt-step-s", type=float, default=20.0, help="seconds per step", env_var="LOADTEST_STEP_S")
    group.add_argument("--lt-max-requests", type=int, default=0, help="stop after this many requests (0: no limit)",
                       env_var="LOADTEST_MAX_REQUESTS")
    group.add_argument("--lt-think-s", type=float, default=0.0, help="pause between a user's requests",
                       env_var="LOADTEST_THINK_S")
    group.add_argument("--lt-timeout-s", type=float, default=300.0, env_var="LOADTEST_TIMEOUT_S")
    group.add_argument("--lt-out", default="build/loadtest", help="where requests.jsonl is written",
                       env_var="LOADTEST_OUT")
    group.add_argument("--lt-find-capacity", action="store_true", help="search the knee instead of --lt-steps",
                       env_var="LOADTEST_FIND_CAPACITY")
    group.add_argument("--lt-start-concurrency", type=int, default=1, env_var="LOADTEST_START_CONCURRENCY")
    group.add_argument("--lt-max-concurrency", type=int, default=64, env_var="LOADTEST_MAX_CONCURRENCY")
    group.add_argument("--lt-resolution", type=int, default=1, env_var="LOADTEST_RESOLUTION")
    group.add_argument("--lt-slo-ttft-ms", type=float, default=None, env_var="LOADTEST_SLO_TTFT_MS")
    group.add_argument("--lt-slo-tpot-ms", type=float, default=None, env_var="LOADTEST_SLO_TPOT_MS")
    group.add_argument("--lt-slo-attainment", type=float, default=None, env_var="LOADTEST_SLO_ATTAINMENT")


def _steps(text: str) -> list[int]:
    steps = [int(x) for x in text.split(",") if x.strip()]
    if not steps or min(steps) < 1:
        raise ValueError(f"--lt-steps needs user counts >= 1, got {text!r}")
    return steps


@events.init.add_listener
def _setup(environment, **_kwargs) -> None:
    options = environment.parsed_options
    if options is None:
        return
    _shared["environment"] = environment
    _steps(options.lt_steps)
    if not options.lt_find_capacity:
        _gate.set()
    else:
        _shared["search"] = Search(options.lt_start_concurrency, options.lt_max_concurrency, options.lt_resolution)
        _shared["slo"] = Slo.from_env(ttft_ms=options.lt_slo_ttft_ms, tpot_ms=options.lt_slo_tpot_ms,
                                      attainment=options.lt_slo_attainment)
    prompts = build_workload(options.lt_workload, options.lt_prompt_tokens)
    _shared["prompts"] = itertools.cycle(prompts)
    _shared["generation"] = Generation(options.lt_max_tokens, options.lt_temperature, options.lt_ignore_eos)


@events.request.add_listener
def _collect(context, **_kwargs) -> None:
    record = (context or {}).get("record")
    if record is None:
        return
    _records.append(record)
    environment = _shared["environment"]
    limit = environment.parsed_options.lt_max_requests  # type: ignore[attr-defined]
    if limit and len(_records) >= limit and environment.runner is not None:  # type: ignore[attr-defined]
        gevent.spawn(environment.runner.quit)


@events.quitting.add_listener
def _write(environment, **_kwargs) -> None:
    out = Path(environment.parsed_options.lt_out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "requests.jsonl").open("w", encoding="utf-8") as f:
        for record in _records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    if "search" in _shared:
        search = {"search": asdict(_shared["search"]), "steps": _search_steps}  # type: ignore[call-overload]
        (out / "search.json").write_text(json.dumps(search, indent=1) + "\n", encoding="utf-8")


class _ChatUser(User):
    """One patient chatting: sends the workload's prompts in turn, one at a time."""

    abstract = True
    request_type = ""

    def wait_time(self) -> float:
        """Between chats: the think time, after the knee search's gate opens (Locust stops a waiting user at
        once, so a step with fewer users never waits for one parked here)."""
        _gate.wait()
        think = self.environment.parsed_options.lt_think_s
        return random.uniform(think / 2, think * 1.5) if think else 0.0

    @property
    def label(self) -> str:
        options = self.environment.parsed_options
        return options.lt_label or options.lt_target

    def send(self, prompt: Prompt, generation: Generation, recorder: Recorder) -> None:
        raise NotImplementedError

    @task
    def chat(self) -> None:
        if not _gate.is_set():  # between knee-search steps: park in wait_time instead
            return
        _in_flight["chats"] += 1
        try:
            self._chat()
        finally:
            _in_flight["chats"] -= 1

    def _chat(self) -> None:
        prompt: Prompt = next(_shared["prompts"])  # type: ignore[call-overload]
        generation: Generation = _shared["generation"]  # type: ignore[assignment]
        recorder = Recorder(self.label, prompt.name, self.environment.runner.user_count, prompt.prompt_tokens,
                            generation.max_tokens)
        try:
            self.send(prompt, generation, recorder)
            record = recorder.finish()
        except Exception as exc:  # a failed request is a result, never the end of the user
            record = recorder.finish(error_text(exc))
        self._fire(record)

    def _fire(self, record: RequestRecord) -> None:
        self.environment.events.request.fire(
            request_type=self.request_type, name=record.prompt_name.rsplit("-", 1)[0],
            response_time=record.e2e_s * 1000, response_length=record.output_tokens,
            exception=RuntimeError(record.error) if record.error else None,
            context={"record": record.to_json(), "ttft_ms": None if record.ttft_s is None else record.ttft_s * 1000,
                     "tpot_ms": None if record.tpot_s is None else record.tpot_s * 1000,
                     "output_tokens": record.output_tokens},
            start_time=time.time() - record.e2e_s, url=self.host)


class TritonChatUser(_ChatUser):
    """The Triton `ensemble` over gRPC streaming through wingpt_client (one channel per Locust process)."""

    request_type = "gRPC"

    def send(self, prompt: Prompt, generation: Generation, recorder: Recorder) -> None:
        if "client" not in _shared:
            timeout = self.environment.parsed_options.lt_timeout_s
            _shared["client"] = WingptClient(self.host, timeout_s=timeout, retries=0)
        send_triton_sync(_shared["client"], prompt, generation, recorder)  # type: ignore[arg-type]


class OpenAIChatUser(_ChatUser):
    """Any OpenAI-compatible streaming chat endpoint (`--host http://HOST:PORT/v1`)."""

    request_type = "HTTP"

    def send(self, prompt: Prompt, generation: Generation, recorder: Recorder) -> None:
        options = self.environment.parsed_options
        endpoint = OpenAIEndpoint(self.host, options.lt_model, options.lt_api_key_env, options.lt_timeout_s)
        stream_openai(endpoint, generation.openai_body(endpoint.model, prompt.as_messages()), recorder.delta)


def _judge_step(users: int) -> bool:
    """The SLO verdict on one step, from all its requests (the gate kept new ones out until they finished)."""
    records = [RequestRecord.from_json(r) for r in _records if r["concurrency"] == users]
    summary = summarize(records, level_duration_s(records), _shared["slo"])  # type: ignore[arg-type]
    _search_steps.append({"users": users, "judged_requests": len(records), "meets_slo": summary["meets_slo"],
                          "slo_attainment": summary["slo_attainment"]})
    print(f"knee search: {users} users, {len(records)} requests, SLO "
          f"{'met' if summary['meets_slo'] else 'missed'} ({100 * summary['slo_attainment']:.0f}%)", file=sys.stderr)
    return summary["meets_slo"]


class StepShape(LoadTestShape):
    """Each user count of `--lt-steps` for `--lt-step-s` seconds, all users started at once, then stop; with
    `--lt-find-capacity`, the user counts of the knee search: each step sends for `--lt-step-s` seconds, then
    drains (gate closed) and is judged, and the next step's users are started before the gate opens again."""

    def __init__(self) -> None:
        super().__init__()
        self._users: int | None = None  # the knee search's current step
        self._phase = "switching"  # switching -> sending -> draining -> (judged) switching ...
        self._step_started = 0.0
        self._verdicts: dict[int, bool] = {}

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        if options.lt_find_capacity:
            return self._search_tick(options.lt_step_s)
        steps = _steps(options.lt_steps)
        index = int(self.get_run_time() // options.lt_step_s)
        if index >= len(steps):
            return None
        return steps[index], float(steps[index])

    def _search_tick(self, step_s: float) -> tuple[int, float] | None:
        now = self.get_run_time()
        if self._users is None:  # the first tick: start the first step's users behind the closed gate
            self._users = next_level(self._verdicts, _shared["search"])  # type: ignore[arg-type]
        elif self._phase == "switching":  # the runner has set the user count since the last tick
            _gate.set()
            self._phase, self._step_started = "sending", now
        elif self._phase == "sending" and now - self._step_started >= step_s:
            _gate.clear()
            self._phase = "draining"
        if self._phase == "draining" and not _in_flight["chats"]:
            self._verdicts[self._users] = _judge_step(self._users)
            self._users = next_level(self._verdicts, _shared["search"])  # type: ignore[arg-type]
            self._phase = "switching"
        return None if self._users is None else (self._users, float(self._users))
