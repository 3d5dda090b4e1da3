"""`wingpt-chat`: ask WiNGPT2 from a shell, a cron job or a Kubernetes test pod.

    wingpt-chat "宝宝15个月37.3度算发烧吗？"          one question, the answer streamed to stdout
    wingpt-chat -i                                    multi-turn chat (/reset forgets, /exit or EOF ends)
    wingpt-chat --json "..."                          one JSON object per answer (text, request_id, timings)
    wingpt-chat --info                                server health and what model is served

Settings come from flags, else from WINGPT_* environment variables (WINGPT_URL, WINGPT_TOKEN, ...).
Exit status says what went wrong, so scripts can branch without parsing text.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import IO, Any

from wingpt_client._protocol import Triage
from wingpt_client.client import WingptClient
from wingpt_client.config import ClientConfig, add_connection_flags, config_from_flags
from wingpt_client.errors import (
    CancelledError,
    DeadlineExceededError,
    InvalidRequestError,
    OverloadedError,
    UnavailableError,
    WingptClientError,
)

EXIT_OK = 0
EXIT_SERVER_ERROR = 1
EXIT_UNAVAILABLE = 3
EXIT_INVALID = 4
EXIT_OVERLOADED = 5
EXIT_DEADLINE = 6
EXIT_INTERRUPTED = 130

_EXIT_CODES: tuple[tuple[type[WingptClientError], int], ...] = (
    (UnavailableError, EXIT_UNAVAILABLE),
    (InvalidRequestError, EXIT_INVALID),
    (OverloadedError, EXIT_OVERLOADED),
    (DeadlineExceededError, EXIT_DEADLINE),
    (CancelledError, EXIT_INTERRUPTED),
)

_EPILOG = """exit status: 0 answered; 1 server error; 2 bad arguments; 3 server unreachable (down, wrong --url,
TLS mismatch); 4 request refused (the server's message says why); 5 server overloaded; 6 deadline
(--timeout) passed; 130 interrupted."""


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="wingpt-chat", description=__doc__, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("prompt", nargs="*", help="the question ('-' reads it from stdin); none: interactive")
    parser.add_argument("-i", "--interactive", action="store_true", help="multi-turn chat, one user turn per line")
    parser.add_argument("--json", action="store_true", help="print one JSON object per answer instead of text")
    parser.add_argument("--info", action="store_true", help="print server health and model info as JSON, then exit")
    add_connection_flags(parser)
    gen = parser.add_argument_group("generation (server defaults when left out)")
    gen.add_argument("--system", help="system turn before the conversation")
    gen.add_argument("--max-tokens", type=int)
    gen.add_argument("--temperature", type=float, help="0 = greedy")
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--repetition-penalty", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--stop", action="append", metavar="TEXT", help="stop at this text (repeatable)")
    args = parser.parse_args(argv)
    if args.prompt and (args.interactive or args.info):
        parser.error("give a prompt, or --interactive, or --info")
    return args


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    values = {
        "max_tokens": args.max_tokens, "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
        "repetition_penalty": args.repetition_penalty, "seed": args.seed, "stop": args.stop,
    }
    return {k: v for k, v in values.items() if v is not None}


def _answer(client: WingptClient, messages: list[dict[str, str]], args: argparse.Namespace, out: IO[str]) -> str:
    """Ask once; stream the text to `out` as it arrives (or print one JSON object). Ctrl-C cancels the request."""
    start = time.monotonic()
    parts: list[str] = []
    with client.stream_chat(messages, **_sampling(args)) as s:
        for delta in s:
            if not parts and not args.json:
                _write_notice(s.triage, out)
            parts.append(delta)
            if not args.json:
                out.write(delta)
                out.flush()
        if not parts and not args.json:  # the hospital's rules may stop the answer after a notice
            _write_notice(s.triage, out)
        text = "".join(parts)
        if args.json:
            first = s.first_response_at
            record = {
                "text": text, "request_id": s.request_id, "model": client.config.model,
                "triage": None if s.triage is None else dataclasses.asdict(s.triage),
                "ttft_s": None if first is None else round(first - start, 4),
                "elapsed_s": round(time.monotonic() - start, 4),
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            out.write("\n")
        out.flush()
    return text


def _write_notice(triage: Triage | None, out: IO[str]) -> None:
    """The urgent-care notice goes above the answer, where a patient reads first."""
    if triage is not None and triage.flagged:
        out.write(f"{triage.notice}\n\n")
        out.flush()


def _report(error: WingptClientError, config: ClientConfig) -> int:
    if isinstance(error, UnavailableError):
        message = (f"cannot reach the WiNGPT2 server at {config.url} ({error}). "
                   "Is Triton running there? Check --url and the TLS flags.")
    elif isinstance(error, InvalidRequestError):
        message = f"the server refused the request: {error}"
    elif isinstance(error, OverloadedError):
        message = f"the server is overloaded, try again shortly ({error})"
    elif isinstance(error, DeadlineExceededError):
        message = f"no complete answer within the deadline of {config.timeout_s} s ({error})"
    elif isinstance(error, CancelledError):
        message = "cancelled"
    else:
        message = f"server error [{error.code}]: {error}"
    print(f"wingpt-chat: {message}", file=sys.stderr)
    return next((code for cls, code in _EXIT_CODES if isinstance(error, cls)), EXIT_SERVER_ERROR)


def _info(client: WingptClient) -> int:
    health = client.health()
    record = {"health": dataclasses.asdict(health) | {"ok": health.ok}}
    if health.model_ready:
        record["model"] = dataclasses.asdict(client.model_info())
    print(json.dumps(record, ensure_ascii=False, indent=2))
    return EXIT_OK if health.ok else EXIT_UNAVAILABLE


def _interactive(client: WingptClient, args: argparse.Namespace) -> int:
    """One user turn per stdin line; the history is resent each turn (the server is stateless)."""
    tty = sys.stdin.isatty()
    info = client.model_info()  # fails fast, with the usual message, when the server is down
    if info.embedded_default:
        print(f"wingpt-chat: note: {info.note}", file=sys.stderr)
    if tty:
        print("wingpt-chat: one question per line; /reset forgets the conversation, /exit or Ctrl-D ends.",
              file=sys.stderr)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict[str, str]] = []
    status = EXIT_OK
    while True:
        if tty:
            print("你> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return status
        line = line.strip()
        if line in ("/exit", "/quit"):
            return status
        if line == "/reset":
            history.clear()
            continue
        if not line:
            continue
        turn = {"role": "user", "content": line}
        try:
            answer = _answer(client, [*system, *history, turn], args, sys.stdout)
        except KeyboardInterrupt:
            print("\nwingpt-chat: answer cancelled", file=sys.stderr)
            continue
        except WingptClientError as exc:
            status = _report(exc, client.config)
            continue
        history += [turn, {"role": "assistant", "content": answer}]
        status = EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        config = config_from_flags(args)
    except (ValueError, OSError) as exc:
        print(f"wingpt-chat: {exc}", file=sys.stderr)
        return 2
    client = WingptClient.from_config(config)
    try:
        if args.info:
            return _info(client)
        if args.interactive or not args.prompt:
            return _interactive(client, args)
        prompt = sys.stdin.read() if args.prompt == ["-"] else " ".join(args.prompt)
        system = [{"role": "system", "content": args.system}] if args.system else []
        _answer(client, [*system, {"role": "user", "content": prompt.strip()}], args, sys.stdout)
        return EXIT_OK
    except WingptClientError as exc:
        return _report(exc, config)
    except KeyboardInterrupt:
        print("\nwingpt-chat: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
