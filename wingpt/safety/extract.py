"""Numbers that red flags depend on: body temperature and a child's age, read from normalised text.

Keywords alone cannot tell 2个月大 from 2岁 or 37.8度 from 39.5度, and "fever in an infant under
three months" is one of the flags that most needs catching. Each reader returns
(value, start, end) so a temperature can still be negated or placed in the past like any term.
"""

from __future__ import annotations

import re

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}


def cn_number(text: str) -> float | None:
    """`39.5`, `三十九`, `四十`, `十五`, `两`, `半` -> a number; None for what it cannot read (几)."""
    if text == "半":
        return 0.5
    try:
        return float(text)
    except ValueError:
        pass
    whole, _, frac = text.partition("点")
    if any(c not in _CN_DIGITS and c != "十" for c in whole + frac):
        return None
    if "十" in whole:
        tens, _, ones = whole.partition("十")
        if len(tens) > 1 or len(ones) > 1 or "十" in ones:  # 十三三, 十十, 三三十: not numbers
            return None
        value = float((_CN_DIGITS[tens] if tens else 1) * 10 + (_CN_DIGITS[ones] if ones else 0))
    elif len(whole) == 1:
        value = float(_CN_DIGITS[whole])
    else:
        return None
    if frac:
        value += float("0." + "".join(str(_CN_DIGITS[c]) for c in frac))
    return value


# --- temperature --------------------------------------------------------------------------------
# Each number pattern below starts with one character class (the branch after it checks which kind
# of number began), so `re` skips ahead to the next digit or numeral instead of trying the whole
# pattern at every character of a long message.
_TEMP_NUM = (
    r"([0-9三四](?:(?<=[0-9])[0-9](?:\.[0-9]{1,2})?|(?<=[三四])十[一二三四五六七八九]?(?:点[零〇一二三四五六七八九])?))"
)
# 39.5度, 40°c, 三十九度五, 39度5 (= 39.5); not the 5 of 39度5天.
_TEMP_WITH_UNIT = re.compile(
    _TEMP_NUM + r"(?:摄氏)?(?:度|°c|°)(?:([0-9一二三四五六七八九])(?![0-9]|天|个|次|小时|分|周|岁|月))?"
    r"(?!的?(?:天气|高温|气温|热水|水))"
)
# 体温39.8, 烧到40, 发烧39度: a number after a fever word needs no unit.
_TEMP_AFTER_WORD = re.compile(r"(?:体温|烧|测了?|量了?)(?:是|有|到|了|都|已经|一直|在)*" + _TEMP_NUM)
_FAHRENHEIT = re.compile(r"([0-9]{2,3}(?:\.[0-9])?)(?:°f|华氏度?)|华氏([0-9]{2,3}(?:\.[0-9])?)度?")
# 体温不到38度 / 外面气温40度 are not a fever.
_NOT_A_FEVER_BEFORE = re.compile(r"(?:不到|没到|不超过|没超过|没有超过|低于|未超过|未到|气温|室温|水温|外面|天气)$")
BODY_TEMPERATURE = (35.0, 43.0)


def temperatures(text: str) -> list[tuple[float, int, int]]:
    """Body temperatures in °C mentioned in `text`, each with its span."""
    found: list[tuple[float, int, int]] = []
    for m in _TEMP_WITH_UNIT.finditer(text):
        # 139度 holds no 39度; checked here because a leading look-behind would slow every search.
        if m.start() and text[m.start() - 1].isdigit():
            continue
        value = cn_number(m.group(1))
        if value is not None and m.group(2):
            value = int(value) + (cn_number(m.group(2)) or 0) / 10
        if value is not None:
            found.append((value, m.start(), m.end()))
    for m in _TEMP_AFTER_WORD.finditer(text):
        value = cn_number(m.group(1))
        if value is not None:
            found.append((value, m.start(1), m.end()))
    if "°f" in text or "华氏" in text:  # rare: skip the scan otherwise
        for m in _FAHRENHEIT.finditer(text):
            value = (float(m.group(1) or m.group(2)) - 32) * 5 / 9
            found.append((round(value, 1), m.start(), m.end()))
    low, high = BODY_TEMPERATURE
    return [
        (value, start, end)
        for value, start, end in found
        if low <= value <= high and not _NOT_A_FEVER_BEFORE.search(text, max(0, start - 4), start)
    ]


# --- age ----------------------------------------------------------------------------------------
_AGE_N = r"(?:[0-9]{1,3}|[一二两三四五六七八九十]{1,3}|半)"
# The same numbers, starting with one character class (see _TEMP_NUM).
_AGE_N_FAST = (
    r"[0-9一二两三四五六七八九十半]"
    r"(?:(?<=[0-9])[0-9]{0,2}|(?<=[一二两三四五六七八九十])[一二两三四五六七八九十]{0,2}|(?<=半))"
)
_KIN = r"宝宝|孩子|婴儿|小孩|儿子|女儿|闺女|娃|宝贝|小宝"
# 不到3个月 / 快3个月 / 3个月不到: just under the stated age.
_UNDER_WORDS = r"不到|未满|没满|不满|还不到|还没满|还没到|快要|快|还差"
# 出生40天, 宝宝2个月, 孩子才50天: a kin or birth word before the number.
_AGE_AFTER_WORD = re.compile(
    r"(?:出生|生下来|出世|月龄|" + _KIN + r")(?:才|刚|刚刚|已经|今天|现在|刚满|满|有|是|只有|第)*"
    r"(?P<under>"
    + _UNDER_WORDS
    + r")?(?P<n>"
    + _AGE_N
    + r")(?P<unit>个半月|个多月|个月|月龄|个?星期|个?礼拜|周|天)(?P<after>不到)?"
)
_AGE_NUMBER_FIRST = re.compile(
    # One number, then either years (5岁, 1岁2个月, 3岁半: years first, so the 2个月 of 1岁2个月 is
    # never read alone) or 2个月大, 40天的宝宝, 6周龄: a unit, then 大/龄 or a kin word. The number
    # comes first, outside the branch, so the search skips ahead to digits and numerals.
    r"(?P<num>" + _AGE_N_FAST + r")"
    r"(?:周?岁(?P<yhalf>半)?(?:零|又)?(?:(?P<ym>[0-9]{1,2}|[一二两三四五六七八九十]{1,2})个?月)?(?P<years>)"
    r"|(?P<unit>个半月|个多月|个月|月|个?星期|个?礼拜|周|天)(?P<after>不到)?"
    r"(?:大|龄|的?(?:男婴|女婴|新生儿|" + _KIN + r")))"
)
_UNDER_BEFORE = re.compile(r"(?:" + _UNDER_WORDS + r")$")
_UNIT_DAYS = {
    "个半月": 30,
    "个多月": 30,
    "个月": 30,
    "月龄": 30,
    "月": 30,
    "星期": 7,
    "个星期": 7,
    "礼拜": 7,
    "个礼拜": 7,
    "周": 7,
    "天": 1,
}


def ages_days(text: str) -> list[tuple[int, int, int]]:
    """Ages mentioned in `text`, in days, each with its span."""
    found: list[tuple[int, int, int]] = []
    for m in _AGE_AFTER_WORD.finditer(text):
        days = _days(m.group("n"), m.group("unit"), bool(m.group("under") or m.group("after")))
        if days is not None:
            found.append((days, m.start(), m.end()))
    for m in _AGE_NUMBER_FIRST.finditer(text):
        if m.group("years") is not None:
            years, months = cn_number(m.group("num")), cn_number(m.group("ym") or "零")
            if years is not None and months is not None:
                found.append((int(years * 365 + (182 if m.group("yhalf") else 0) + months * 30), m.start(), m.end()))
            continue
        under = bool(m.group("after") or _UNDER_BEFORE.search(text, max(0, m.start() - 3), m.start()))
        days = _days(m.group("num"), m.group("unit"), under)
        if days is not None:
            found.append((days, m.start(), m.end()))
    return found


def _days(number: str, unit: str, under: bool) -> int | None:
    value = cn_number(number)
    if value is None:
        return None
    return int(value * _UNIT_DAYS[unit] + (15 if unit in ("个半月", "个多月") else 0)) - (1 if under else 0)


# --- blood pressure and blood sugar --------------------------------------------------------------
# 血压180/110, 血压量出来210/130, 高压200多, 血压只有70多, 170/110mmhg: the systolic value.
_BP_AFTER_WORD = re.compile(r"(?:血压|高压|收缩压)[^0-9,.!?;。]{0,6}?([0-9]{2,3})(?:/([0-9]{2,3}))?")
_BP_READING = re.compile(r"([0-9][0-9]{1,2})/([0-9]{2,3})(?:mmhg|毫米汞柱)")  # [0-9] first: skips ahead
SYSTOLIC = (40, 300)
# 血糖2.1, 血糖只有1.8, 血糖测出来2.5: mmol/L (values above 35 are mg/dL and converted).
_GLUCOSE_AFTER_WORD = re.compile(r"血糖[^0-9,.!?;。]{0,6}?([0-9]{1,3}(?:\.[0-9]{1,2})?)")


def systolic_pressures(text: str) -> list[tuple[float, int, int]]:
    """Systolic blood pressures (mmHg) mentioned in `text`, each with its span."""
    if "压" not in text and "mmhg" not in text and "毫米汞柱" not in text:
        return []
    found = []
    # Each pattern needs its word or its slash: a long message without them is not searched.
    if "血压" in text or "高压" in text or "收缩压" in text:
        patterns: tuple[re.Pattern[str], ...] = (_BP_AFTER_WORD, _BP_READING) if "/" in text else (_BP_AFTER_WORD,)
    else:
        patterns = (_BP_READING,) if "/" in text else ()
    for pattern in patterns:
        for m in pattern.finditer(text):
            systolic = float(m.group(1))
            diastolic = float(m.group(2)) if m.group(2) else None
            if SYSTOLIC[0] <= systolic <= SYSTOLIC[1] and (diastolic is None or diastolic < systolic):
                found.append((systolic, m.start(), m.end()))
    return found


def glucose_values(text: str) -> list[tuple[float, int, int]]:
    """Blood sugar readings in mmol/L mentioned in `text`, each with its span."""
    if "血糖" not in text:
        return []
    found = []
    for m in _GLUCOSE_AFTER_WORD.finditer(text):
        value = float(m.group(1))
        found.append((round(value / 18, 1) if value > 35 else value, m.start(), m.end()))
    return found
