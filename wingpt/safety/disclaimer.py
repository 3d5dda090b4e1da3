"""The model card's disclaimer (局限性与免责声明) in short form: the one copy every client shows."""

DISCLAIMER = (
    "WiNGPT2 提供的信息和建议仅供参考，可能存在错误或不准确，不能替代医生或其他医疗专业人员的意见、诊断或治疗。"
    "请在采用前咨询医生并独立评估；如遇紧急情况，请立即拨打120或前往最近医院急诊。"
)
