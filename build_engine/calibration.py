"""Calibration prompts: load (shipped or the user's JSONL), pack, and stage them for quantize.py.

How the pinned release takes a custom set: `quantize.py --calib_dataset <dir>` -- for a local
directory its loader calls `datasets.load_dataset(<dir>, split="train")` and reads the `text`
column (quantize_by_modelopt.get_calib_dataloader). So we write `<engine>/calib/train.jsonl` of
`{"text": ...}` lines and pass that directory; no wrapper around ModelOpt is needed.

Why pack: for AWQ that loader keeps only the first 32 samples (calib_size is capped at 32), and it
pads every sample to the longest one and feeds only `input_ids` (no attention mask), so padding is
calibrated on too. Packing the prompts round-robin into `samples` texts of similar length lets every
prompt count and keeps padding small. Prompts are joined as one multi-turn chat with empty answers
(`...Assistant:<|endoftext|>\\n User: ...`), so the packed text is still the WiNGPT2 template.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from build_engine.errors import ConfigError
from wingpt.chat_template import parse_messages, render_text
from wingpt.errors import InvalidRequest
from wingpt.tokenizer import ENDOFTEXT

TURN_SEPARATOR = ENDOFTEXT + "\n "
STAGED_FILE = "train.jsonl"  # datasets assigns a file named train.* to the "train" split


def load_prompts(path: str | Path, minimum: int) -> list[str]:
    """Prompts from JSONL: `{"text": "<already templated>"}` or `{"messages": [{role, content}, ...]}`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"calibration file {path} does not exist")
    prompts: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            prompts.append(_prompt(line, f"{path}:{number}"))
    if len(prompts) < minimum:
        raise ConfigError(f"{path} has {len(prompts)} prompts; calibration needs at least {minimum} "
                          "(one per packed sample)")
    return prompts


def _prompt(line: str, where: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: expected an object with 'text' or 'messages'")
    if "messages" in record:
        try:
            return render_text(parse_messages(record["messages"]))
        except InvalidRequest as exc:
            raise ConfigError(f"{where}: {exc}") from None
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: 'text' must be a non-empty string (or give 'messages')")
    return text


def pack(prompts: list[str], samples: int) -> list[str]:
    """Deal the prompts round-robin into `samples` texts, so each text mixes every kind of prompt."""
    count = min(samples, len(prompts))
    return [TURN_SEPARATOR.join(prompts[i::count]) for i in range(count)]


def staged_jsonl(packed: list[str]) -> str:
    return "".join(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in packed)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
