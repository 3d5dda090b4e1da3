"""Regenerate the shipped calibration set: `python -m build_engine.make_calibration [--check]`.

Every prompt is rendered by `wingpt.chat_template.render_text`, the same function the server's
orchestrator uses, so calibration sees exactly the token patterns production will.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from build_engine import calibration_sources as src
from build_engine.settings import SHIPPED_CALIBRATION
from wingpt.chat_template import Message, render_text


def _ask(question: str) -> str:
    return render_text([Message("user", question)])


def records() -> list[dict[str, str]]:
    """The calibration prompts, grouped by kind (packing mixes the kinds later)."""
    out = [{"kind": "triage", "text": _ask(f"{situation}，{ask}")}
           for situation in src.TRIAGE_SITUATIONS for ask in src.TRIAGE_ASKS]
    out += [{"kind": "triage-dialogue",
             "text": render_text([Message("user", q1), Message("assistant", a1), Message("user", q2)])}
            for q1, a1, q2 in src.TRIAGE_DIALOGUES]
    out += [{"kind": "drug", "text": _ask(src.DRUG_TEMPLATES[i % len(src.DRUG_TEMPLATES)].format(drug))}
            for i, drug in enumerate(src.DRUGS)]
    n = len(src.DISEASE_TEMPLATES)
    out += [{"kind": "disease", "text": _ask(src.DISEASE_TEMPLATES[(i + k) % n].format(disease))}
            for i, disease in enumerate(src.DISEASES) for k in range(3)]
    out += [{"kind": "seed", "text": _ask(q)} for q in src.SEED_QUESTIONS]
    return out


def render_jsonl() -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build_engine.make_calibration", description=__doc__)
    p.add_argument("--out", type=Path, default=SHIPPED_CALIBRATION)
    p.add_argument("--check", action="store_true", help="fail if the file differs from what would be written")
    args = p.parse_args(argv)
    text = render_jsonl()
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'stale; rerun without --check'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {len(records())} prompts to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
