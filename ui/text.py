"""The interface's Chinese text in one place, so a hospital can review (or translate) every word a patient sees."""

from __future__ import annotations

TITLE = "WiNGPT2 智能分诊咨询"
SUBTITLE = "请描述您的症状或健康问题，AI 助手会给出参考建议。"

# The questions the seed deployment compared WiNGPT2 with another assistant on (../shared/seeds/000_*.txt, 性能对比).
EXAMPLES = (
    "出现急性心肌梗死一般对身体带来哪些伤害",
    "肝肿瘤指标高就是癌症吗",
    "经常摇动婴儿睡觉会有什么不良反应吗",
    "宝宝15个月37.3度算发烧吗？",
    "泛发型白癜风的症状表现",
)
EXAMPLES_LABEL = "示例问题（点击填入）"

INPUT_LABEL = "您的问题"
INPUT_PLACEHOLDER = "例如：孩子发烧38.5度，精神不好，需要去医院吗？（按回车发送）"
SEND = "发送"
STOP = "停止生成"
CLEAR = "清空对话"
CHAT_LABEL = "问诊对话"
DISCLAIMER_TITLE = "免责声明"

SETTINGS = "生成设置"
MAX_TOKENS = "最大生成长度（token）"
TEMPERATURE = "温度"
TEMPERATURE_INFO = "0 为贪心解码（模型卡推荐）；越高回答越多样"
TOP_P = "Top-p（核采样）"
TOP_P_INFO = "温度大于 0 时生效；1 表示不截断"
REPETITION_PENALTY = "重复惩罚"
REPETITION_PENALTY_INFO = "模型卡推荐 1.1"

URGENT_TITLE = "紧急提示"
GENERATING = "⏳ 正在生成回答…"
STOPPED = "（已停止生成）"

STATUS_OK = "🟢 服务正常 · 服务器 {url} · 模型 {model}（Triton {version}）"
STATUS_EMBEDDED = "⚠️ 当前为内嵌冒烟测试模型（随机权重，回答没有医学意义，仅用于验证部署）"
STATUS_REAL_MODEL = "真实模型权重"
STATUS_NOT_READY = "🟡 已连接服务器 {url}，但模型 {model} 尚未就绪，正在等待…"
STATUS_DOWN = "🔴 无法连接问诊服务器 {url}，正在自动重试，恢复后即可继续咨询。如遇紧急情况请立即拨打120。"
STATUS_CHECKING = "⏳ 正在连接问诊服务器…"

ERROR_UNAVAILABLE = "⚠️ 暂时无法连接问诊服务器，请稍后重试。如遇紧急情况，请立即拨打120或前往最近医院急诊。"
ERROR_OVERLOADED = "⚠️ 当前咨询人数较多，请稍候片刻再试。"
ERROR_DEADLINE = "⚠️ 回答超时，请稍后重试，或在“生成设置”中减小最大生成长度。"
ERROR_INVALID = "⚠️ 请求无法处理：{message}"
ERROR_INTERNAL = "⚠️ 服务器出现内部错误，请稍后重试（请求编号 {request_id}）。"
