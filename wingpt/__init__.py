"""WiNGPT2 serving core: the one home of the chat template, tokenizer, detokenizer and engine.

Everything that both the Triton models and the tools around them (baselines, tests,
benchmarks) need lives here, so no piece of logic is written twice.
"""
