"""Seed-style baseline: transformers `generate`, one request at a time, behind an OpenAI-compatible API.

This is how the seed served WiNGPT2 (a Gradio demo calling `model.generate` with a queue of one),
made measurable: same model, same template and tokenizer, same streaming detokenizer as the Triton
deployment, but no batching: a request waits for the lock while another one generates, and its
TTFT includes that wait.

    python -m loadtest.baselines.seed_server --device cuda --dtype bfloat16 --port 9000 [--model-dir DIR]

`POST /v1/chat/completions` (`stream` true or false; `max_tokens`, `temperature`, `top_p`,
`repetition_penalty`, and vLLM's `ignore_eos` / `min_tokens`), `GET /v1/models`, `GET /health`.
Standard library HTTP only, so a GPU machine needs nothing beyond torch, transformers and numpy.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from wingpt.chat_template import build_prompt_ids, parse_messages
from wingpt.detokenizer import StreamDetokenizer
from wingpt.engine.checkpoint import load_model
from wingpt.engine.embedded import WARNING, ensure_embedded_model, is_embedded
from wingpt.errors import InvalidRequest
from wingpt.sampling import resolve_max_tokens, resolve_sampling
from wingpt.settings import ServerSettings
from wingpt.tokenizer import QwenTokenizer, load_tokenizer

MODEL_NAME = "wingpt2-seed-baseline"
_END = object()


class _DetokenizingStreamer(BaseStreamer):
    """generate()'s streamer: token ids -> text deltas (never a split character) on a queue."""

    def __init__(self, tok: QwenTokenizer) -> None:
        self._detok = StreamDetokenizer(tok)
        self._prompt_seen = False
        self.generated = 0
        self.deltas: queue.SimpleQueue = queue.SimpleQueue()

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt itself
            self._prompt_seen = True
            return
        ids = value.reshape(-1).tolist()
        self.generated += len(ids)
        text = self._detok.feed(ids)
        if text:
            self.deltas.put(text)

    def end(self) -> None:
        tail = self._detok.finish()
        if tail:
            self.deltas.put(tail)
        self.deltas.put(_END)


class _Cancelled(StoppingCriteria):
    """Stops generation when the HTTP client has gone away."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat completion request, with the server's limits applied."""

    prompt_ids: list[int]
    max_tokens: int
    stream: bool
    generate_kwargs: dict

    @classmethod
    def parse(cls, body: object, tok: QwenTokenizer, context_window: int, max_tokens_limit: int) -> ChatRequest:
        if not isinstance(body, dict):
            raise InvalidRequest("body", "must be a JSON object")
        messages = parse_messages(body.get("messages"))  # type: ignore[arg-type]
        max_tokens = resolve_max_tokens(_number(body, "max_tokens", int), min(512, max_tokens_limit),
                                        max_tokens_limit)
        sampling = resolve_sampling(temperature=_number(body, "temperature", float),
                                    top_p=_number(body, "top_p", float),
                                    repetition_penalty=_number(body, "repetition_penalty", float))
        ids, _ = build_prompt_ids(tok, messages, context_window - max_tokens)
        min_tokens = max_tokens if body.get("ignore_eos") else min(_number(body, "min_tokens", int) or 0, max_tokens)
        kwargs: dict = {"max_new_tokens": max_tokens, "repetition_penalty": sampling.repetition_penalty,
                        "eos_token_id": tok.eod_id, "pad_token_id": tok.pad_id}
        if min_tokens:
            kwargs["min_new_tokens"] = min_tokens
        if sampling.greedy:
            kwargs["do_sample"] = False
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        return cls(ids, max_tokens, bool(body.get("stream", False)), kwargs)


def _number(body: dict, name: str, kind: type) -> int | float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not float(value).is_integer()):
        raise InvalidRequest(name, f"must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


class SeedBaseline:
    """The model, its tokenizer and the one lock every generation holds (the seed's queue of one)."""

    def __init__(self, model_dir: str, device: str, dtype: str, context_window: int, max_tokens_limit: int) -> None:
        self.model_dir = model_dir
        self.tok = load_tokenizer(model_dir)
        self.model = load_model(model_dir, device, getattr(torch, dtype))
        self.device = device
        self.context_window = context_window
        self.max_tokens_limit = max_tokens_limit
        self.lock = threading.Lock()
        self.note = WARNING if is_embedded(model_dir) else ""

    def generate(self, request: ChatRequest, streamer: _DetokenizingStreamer, cancelled: _Cancelled) -> None:
        """Runs on its own thread while the caller streams; holds the lock for the whole generation."""
        ids = torch.tensor([request.prompt_ids], device=self.device)
        try:
            with self.lock, torch.inference_mode():
                self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                    stopping_criteria=StoppingCriteriaList([cancelled]), **request.generate_kwargs)
        except Exception as exc:  # reported to the client as the stream's error; the server keeps serving
            streamer.deltas.put(exc)
            streamer.deltas.put(_END)


class Handler(BaseHTTPRequestHandler):
    server: BaselineHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # no prompt text in logs
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/health":
            self._json(HTTPStatus.OK, {"status": "ok", "model_dir": self.server.baseline.model_dir,
                                       "note": self.server.baseline.note})
        elif self.path.rstrip("/") == "/v1/models":
            self._json(HTTPStatus.OK, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]})
        else:
            self._error(HTTPStatus.NOT_FOUND, "path", f"no such endpoint {self.path}")

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(HTTPStatus.NOT_FOUND, "path", f"no such endpoint {self.path}")
            return
        baseline = self.server.baseline
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            self._error(HTTPStatus.BAD_REQUEST, "body", f"is not valid UTF-8 JSON ({exc})")
            return
        try:
            request = ChatRequest.parse(body, baseline.tok, baseline.context_window, baseline.max_tokens_limit)
        except InvalidRequest as exc:
            self._error(HTTPStatus.BAD_REQUEST, exc.field, exc.problem)
            return
        streamer, cancelled = _DetokenizingStreamer(baseline.tok), _Cancelled()
        worker = threading.Thread(target=baseline.generate, args=(request, streamer, cancelled), daemon=True)
        worker.start()
        try:
            if request.stream:
                self._stream(streamer)
            else:
                self._whole(streamer, request)
        except (BrokenPipeError, ConnectionResetError):
            cancelled.event.set()
        finally:
            worker.join()

    def _chunk_id(self) -> str:
        return f"chatcmpl-{uuid.uuid4().hex}"

    def _stream(self, streamer: _DetokenizingStreamer) -> None:
        chunk_id, created = self._chunk_id(), int(time.time())
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def event(data: dict | str) -> None:
            payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
            self.wfile.write(f"data: {payload}\n\n".encode())
            self.wfile.flush()

        def chunk(delta: dict, finish: str | None) -> dict:
            return {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": MODEL_NAME,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        event(chunk({"role": "assistant"}, None))
        while (item := streamer.deltas.get()) is not _END:
            if isinstance(item, Exception):
                event({"error": {"message": f"generation failed: {type(item).__name__}", "type": "server_error"}})
                continue
            event(chunk({"content": item}, None))
        event(chunk({}, "stop"))
        event("[DONE]")

    def _whole(self, streamer: _DetokenizingStreamer, request: ChatRequest) -> None:
        parts, failure = [], None
        while (item := streamer.deltas.get()) is not _END:
            if isinstance(item, Exception):
                failure = item
            else:
                parts.append(item)
        if failure is not None:
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR,
                       {"error": {"message": f"generation failed: {type(failure).__name__}", "type": "server_error"}})
            return
        self._json(HTTPStatus.OK, {
            "id": self._chunk_id(), "object": "chat.completion", "created": int(time.time()), "model": MODEL_NAME,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts)},
                         "finish_reason": "length" if streamer.generated >= request.max_tokens else "stop"}],
            "usage": {"prompt_tokens": len(request.prompt_ids), "completion_tokens": streamer.generated,
                      "total_tokens": len(request.prompt_ids) + streamer.generated},
        })

    def _json(self, status: HTTPStatus, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: HTTPStatus, field: str, problem: str) -> None:
        self._json(status, {"error": {"message": f"{field}: {problem}", "type": "invalid_request_error",
                                      "param": field}})


class BaselineHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], baseline: SeedBaseline) -> None:
        super().__init__(address, Handler)
        self.baseline = baseline


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.baselines.seed_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default=None, help="checkpoint dir (default: MODEL_DIR, else the embedded default)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="default: float32 on cpu, bfloat16 on cuda (WINGPT_DTYPE overrides)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--context-window", type=int, default=None, help="default: WINGPT_CONTEXT_WINDOW (4096)")
    p.add_argument("--max-tokens-limit", type=int, default=None, help="default: WINGPT_MAX_TOKENS_LIMIT (2048)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        settings = ServerSettings.from_env(target="cpu" if args.device == "cpu" else "gpu-torch",
                                           model_dir=args.model_dir, dtype=args.dtype,
                                           context_window=args.context_window, max_tokens_limit=args.max_tokens_limit)
        model_dir = settings.model_dir or str(ensure_embedded_model(settings.cache_dir))
        if not Path(model_dir, "config.json").is_file():
            raise ValueError(f"--model-dir {model_dir}: no config.json there")
        baseline = SeedBaseline(model_dir, settings.device, settings.resolved_dtype, settings.context_window,
                                settings.max_tokens_limit)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if baseline.note:
        print(f"NOTE: {baseline.note}", file=sys.stderr)
    server = BaselineHTTPServer((args.host, args.port), baseline)
    print(f"ready: seed-style baseline ({MODEL_NAME}, {settings.device}, {settings.resolved_dtype}) on "
          f"http://{args.host}:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
