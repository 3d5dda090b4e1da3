"""Cost of the safety layer per request: `python -m wingpt.safety.bench [--requests N]`.

The assessment runs before the first token of every chat request, so its p99 must stay far below
the model's time to first token (budget: 1 ms). The chats below are realistic triage traffic:
mostly ordinary questions, some red flags, multi-turn histories with assistant replies between,
and a few long messages; then a realistic 2,000-character consultation, and a 2,000-character
message dense with symptoms (the stress case). Prints a human table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from wingpt.chat_template import Message
from wingpt.safety import TriageAssessor, load_rules

_ASSISTANT = "您好，根据您的描述，建议您注意休息，多喝水，观察症状变化。如果症状持续或加重，请及时到医院就诊。"

_CHATS: list[list[str]] = [
    ["宝宝15个月37.3度算发烧吗？"],
    ["我最近总是失眠，晚上翻来覆去睡不着，白天也没精神，有什么办法吗？"],
    ["高血压患者平时饮食需要注意什么？", "那可以喝咖啡吗？"],
    ["我胸口痛，还出了一身冷汗，左边胳膊也麻"],
    ["我爸突然嘴歪了，左边手脚没力气，说话也不清楚"],
    ["孩子突然抽搐，叫不醒，怎么办"],
    ["宝宝2个月大，发烧38.5度，一直哭"],
    ["女儿发烧40度，精神很差，一直睡"],
    ["怀孕8周，肚子痛得受不了，还有点见红"],
    ["我不想活了，活着没意思"],
    ["孩子误服了降压药，大概两三片"],
    ["吃了海鲜以后过敏，喉咙发紧，喘不上气"],
    ["伤口很深，流血止不住"],
    ["没有胸痛，也没有出汗，就是有点咳嗽，嗓子痒"],
    ["去年中风过，现在恢复得不错，想问问平时吃什么药预防复发"],
    ["頭暈，胸悶，出冷汗，這是怎麼回事"],
    ["糖尿病人空腹血糖多少算正常？", "我空腹7.8", "需要吃药吗？"],
    ["我有点胸闷", "医生问我有没有出汗，我刚才出了很多汗"],
    ["最近胃不舒服，吃完饭就胀，偶尔反酸，烧心", "吃什么药比较好"],
    ["孩子3岁，发烧38度，精神还可以，能吃能玩"],
    ["我对花粉过敏，每年春天都打喷嚏流鼻涕"],
    ["月经推迟了一周，会不会是怀孕了？", "验孕棒一条杠"],
    ["体检发现甲状腺结节3类，需要手术吗？"],
    ["膝盖疼了好几个月，上下楼梯特别明显，是关节炎吗"],
    ["我妈妈75岁，最近记性越来越差，经常忘事，是老年痴呆吗"],
    [
        "我今年45岁，男，有十年吸烟史，每天一包，最近一个月经常咳嗽，早上起来有痰，偶尔痰里有血丝，"
        "没有发烧，没有胸痛，也没有呼吸困难，体重没有明显变化，晚上睡觉还可以，想问一下需要做什么检查，"
        "是拍胸片还是做CT，需要挂什么科，平时要注意什么，要不要戒烟，戒烟有什么好办法吗？"
    ],
]


# A realistic long message: a daughter's 2,000-character consultation about her mother's chronic
# conditions, tests and medicines, with worries and past history but no emergency.
LONG_CONSULTATION = (Path(__file__).with_name("data") / "consultation.txt").read_text(encoding="utf-8")


def _conversations() -> list[list[Message]]:
    chats = []
    for turns in _CHATS:
        messages: list[Message] = []
        for i, text in enumerate(turns):
            if i:
                messages.append(Message("assistant", _ASSISTANT))
            messages.append(Message("user", text))
        chats.append(messages)
    return chats


def _percentile(sorted_us: list[float], q: float) -> float:
    return sorted_us[min(len(sorted_us) - 1, round(q * (len(sorted_us) - 1)))]


def _measure(assessor: TriageAssessor, chats: list[list[Message]], requests: int) -> list[float]:
    for chat in chats:  # warm caches (compiled regexes, the t2s table)
        assessor.assess(chat)
    timings = []
    for i in range(requests):
        chat = chats[i % len(chats)]
        start = time.perf_counter_ns()
        assessor.assess(chat)
        timings.append((time.perf_counter_ns() - start) / 1000)
    return sorted(timings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    rules = load_rules()
    assessor = TriageAssessor(rules)
    load_ms = (time.perf_counter() - start) * 1000
    chats = _conversations()
    corpus = "。".join(t for turns in _CHATS for t in turns)
    long_chat = [Message("user", (corpus * (2000 // len(corpus) + 1))[:2000])]
    consultation = [Message("user", LONG_CONSULTATION)]

    rows = {
        "realistic chats": _measure(assessor, chats, args.requests),
        "2,000-char consultation": _measure(assessor, [consultation], max(200, args.requests // 20)),
        "2,000-char message": _measure(assessor, [long_chat], max(200, args.requests // 20)),
    }
    flagged = sum(assessor.assess(chat).flagged for chat in chats)
    print(
        f"safety layer: {len(rules.categories)} categories, {len(rules.terms)} terms, rules loaded in {load_ms:.1f} ms"
    )
    print(f"{len(chats)} chats ({flagged} flagged), Python {platform.python_version()}")
    print(f"{'workload':<24} {'requests':>9} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8} {'max µs':>8}")
    summary = {}
    for name, us in rows.items():
        p50, p90, p99 = (_percentile(us, q) for q in (0.5, 0.9, 0.99))
        print(f"{name:<24} {len(us):>9} {p50:>8.1f} {p90:>8.1f} {p99:>8.1f} {us[-1]:>8.1f}")
        mean = statistics.fmean(us)
        summary[name] = {
            "requests": len(us),
            "p50_us": round(p50, 1),
            "p99_us": round(p99, 1),
            "mean_us": round(mean, 1),
        }
    verdict = "PASS" if summary["realistic chats"]["p99_us"] < 1000 else "FAIL"
    print(f"budget: p99 < 1000 µs per request -> {verdict}")
    print(json.dumps({"bench": "safety", "load_ms": round(load_ms, 1), "budget_us": 1000, **summary}))


if __name__ == "__main__":
    main()
