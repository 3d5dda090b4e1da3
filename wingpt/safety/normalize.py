"""Text normalisation shared by the patient's text and the rule patterns.

Patients type traditional characters, full-width digits, stray spaces and input-method slips;
rules are written once in simplified Chinese. Normalising both sides the same way keeps the
rules file short and the matching a plain regex search.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path

T2S_FILE = Path(__file__).with_name("data") / "t2s.txt"
# Full-width ASCII (，？！０-９ａ-ｚ) -> ASCII, as NFKC would do it; the rest of NFKC is not needed for matching.
_WIDTH = {chr(0xFF01 + i): chr(0x21 + i) for i in range(94)} | {"℃": "°C", "℉": "°F"}
_SPACES = {c: "" for c in " \t\r\f\v\u00a0\u3000"} | {"\n": "。"}
# The characters patients type most that need replacing: replaced first with str.replace, since
# calling back into Python for each of them costs more than the rest of the normalisation.
_COMMON = [(c, _WIDTH.get(c, _SPACES.get(c))) for c in "，？！：；（）\n "]


@cache
def _char_map() -> tuple[dict[str, str], re.Pattern[str]]:
    """One character -> replacement, and a regex of the characters to replace.

    Traditional -> simplified comes from the table shipped beside the rules. A regex finds the few
    characters to replace; `str.translate` or NFKC would visit every character of every message,
    which costs more than all the red-flag patterns of a long message together.
    """
    table = _WIDTH | _SPACES
    for line in T2S_FILE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            table.update((pair[0], pair[1]) for pair in line.split())
    return table, re.compile("[" + "".join(map(re.escape, table)) + "]")


def to_simplified(text: str) -> str:
    """Traditional -> simplified, full-width -> ASCII, whitespace removed, line breaks -> 。 (case kept).

    Line breaks become 。 so they still end a clause once the other whitespace is gone
    (patients write 胸 痛 as often as 胸痛).
    """
    for wide, narrow in _COMMON:  # most of what needs replacing, at C speed
        text = text.replace(wide, narrow)
    table, chars = _char_map()
    return chars.sub(lambda m: table[m.group()], text)


class Normalizer:
    """Patient text -> the form rules match: `to_simplified`, lower case, typos fixed."""

    def __init__(self, typos: Mapping[str, str]) -> None:
        self._typos = dict(typos)
        keys = sorted(self._typos, key=len, reverse=True)
        self._typo_re = re.compile("|".join(map(re.escape, keys))) if keys else None

    def __call__(self, text: str) -> str:
        text = to_simplified(text).lower()
        if self._typo_re is not None:
            text = self._typo_re.sub(lambda m: self._typos[m.group()], text)
        return text
