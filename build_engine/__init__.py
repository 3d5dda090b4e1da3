"""Compile WiNGPT2 (Qwen-7B/14B v1) checkpoints into TensorRT-LLM engines and size them.

`python -m build_engine` quantizes (ModelOpt, through the pinned release's quantize.py), runs
`trtllm-build`, and renders the Triton model repository for the engine; `python -m build_engine.plan`
sizes a deployment. TensorRT-LLM itself runs only inside the pinned container (see `pins.py`).
"""
