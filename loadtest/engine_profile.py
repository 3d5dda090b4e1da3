"""Where a decode step's time goes: `python -m loadtest.engine_profile --device cuda --shape 7b --streams 1,64`.

For each batch size: start the engine (as engine_bench does), wait until every stream is decoding, then
profile a window of steps with torch.profiler. Prints the wall time per step, the GPU's busy time per step
(kernels, CUDA graph replays included) and the kernels that take it: a step much longer than its GPU time
is bound by the host (Python, launches, syncs), one close to it by the kernels listed.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import torch

from loadtest.engine_bench import engine_factory, load, make_prompts
from wingpt.engine.requests import GenerationRequest
from wingpt.sampling import resolve_sampling


def profile(model: torch.nn.Module, streams: int, prompt_tokens: int, output_tokens: int, window_s: float) -> None:
    engine = engine_factory(model, prompt_tokens, output_tokens)(streams)
    engine.start()
    counts = [0] * streams
    done = threading.Semaphore(0)

    def on_tokens(i: int) -> object:
        def call(new: list[int], finish: str | None) -> None:
            counts[i] += len(new)
            if finish is not None:
                done.release()
        return call

    sampling = resolve_sampling(temperature=0.0, repetition_penalty=1.1)
    try:
        for i, ids in enumerate(make_prompts(streams, prompt_tokens)):
            engine.submit(GenerationRequest(request_id=f"p{i}", prompt_ids=ids, max_new_tokens=output_tokens,
                                            sampling=sampling, end_id=-1, on_tokens=on_tokens(i),
                                            on_error=lambda exc: done.release()))
        while min(counts) < 8:  # every stream decoding, graphs captured
            time.sleep(0.01)
        steps, wall = _window(engine, window_s)  # as it runs
        phases = _time_phases(engine)
        timed_steps, _ = _window(engine, window_s)  # with the phase timers
        timed = dict(phases)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            prof_steps, prof_wall = _window(engine, window_s)
        for _ in range(streams):
            done.acquire()
    finally:
        engine.shutdown()
    print(f"\n== {streams} stream(s), without the profiler: {wall / steps * 1000:.2f} ms per step; with phase "
          "timers (each followed by a synchronize): "
          + ", ".join(f"{k} {v / timed_steps * 1000:.2f} ms" for k, v in timed.items()))
    steps, wall = prof_steps, prof_wall
    if not steps:
        raise SystemExit(f"no step under the profiler at {streams} streams: give more --output-tokens")
    events = prof.key_averages()
    device_us = sum(e.self_device_time_total for e in events)
    print(f"== {streams} stream(s), under torch.profiler: {steps} steps in {wall:.2f} s -> "
          f"{wall / steps * 1000:.2f} ms per step, GPU busy {device_us / steps / 1000:.2f} ms per step "
          f"({device_us / 1e6 / wall:.0%} of the time)")
    top = sorted((e for e in events if e.self_device_time_total > 0), key=lambda e: -e.self_device_time_total)
    for e in top[:14]:
        print(f"  {e.self_device_time_total / steps:9.0f} us/step  {e.count / steps:6.1f}/step  {e.key[:90]}")


def _window(engine: object, seconds: float) -> tuple[int, float]:
    """Steps the engine took in `seconds` of wall time, and the wall time."""
    steps, start = engine.stats().steps, time.perf_counter()
    time.sleep(seconds)
    return engine.stats().steps - steps, time.perf_counter() - start


def _time_phases(engine: object) -> dict[str, float]:
    """Wrap the step's phases with wall-clock timers (seconds, summed); the model run is followed by a
    synchronize so that its GPU time is its own, not the sampler's."""
    phases = {"schedule": 0.0, "prepare": 0.0, "run (GPU)": 0.0, "sample": 0.0}
    sync = torch.cuda.synchronize if engine.device.type == "cuda" else (lambda: None)

    def timed(name: str, fn: object, then: object = None) -> object:
        def call(*args: object) -> object:
            start = time.perf_counter()
            result = fn(*args)
            if then is not None:
                then()
            phases[name] += time.perf_counter() - start
            return result
        return call

    engine.scheduler.schedule = timed("schedule", engine.scheduler.schedule)
    engine.runner.prepare = timed("prepare", engine.runner.prepare)
    if engine.graphs is not None:  # (never the forward itself: it may be under CUDA graph capture)
        engine.graphs.run = timed("run (GPU)", engine.graphs.run, sync)
    else:
        engine.runner.forward = timed("run (GPU)", engine.runner.forward, sync)
    engine._sample = timed("sample", engine._sample)
    return phases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.engine_profile", description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--shape", choices=("embedded", "7b"), default="embedded")
    p.add_argument("--streams", default="1,64")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=512)
    p.add_argument("--window-s", type=float, default=0.4, help="each of the three windows (all within the answers)")
    p.add_argument("--out", default="build/engine-bench")
    args = p.parse_args(argv)
    model = load(args.shape, args.device, Path(args.out))
    for streams in (int(s) for s in args.streams.split(",")):
        profile(model, streams, args.prompt_tokens, args.output_tokens, args.window_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
