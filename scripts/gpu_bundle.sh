#!/usr/bin/env bash
# Assemble .gpu-bundle/: what `loadtest/gpu_run.sh` needs on a GPU machine that has PyTorch and
# transformers but no network (the device machines here: Python 3.12, torch 2.11, numpy 2.x).
#   - triton/: the nvidia-pytriton 0.7.0 wheel's tritonserver, its libraries and the Python 3.12
#     backend stub only (the rest of the wheel is pytriton's own Python API, not used), as tar.xz;
#   - wheels for Python 3.12: numpy 1.26.4 (the 2.51 python backend stub crashes under numpy 2),
#     tritonclient 2.73.0 and python-rapidjson (what client/ needs);
#   - dashscope/resources/qwen.tiktoken: the Qwen BPE file, where wingpt/tokenizer.py looks for it.
# Needs `make setup` first (it copies from .venv). About 56 MB; the device tool carries 64 MiB a call.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${GPU_PYTHON_VERSION:-3.12}
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
out=.gpu-bundle
rm -rf "$out" && mkdir -p "$out/wheels" "$out/dashscope/resources" "$out/stage/pytriton/tritonserver/python_backend_stubs"
src=$site/pytriton/tritonserver
cp -r "$src/bin" "$src/backends" "$src/caches" "$out/stage/pytriton/tritonserver/"
cp -r "$src/python_backend_stubs/$PYVER" "$out/stage/pytriton/tritonserver/python_backend_stubs/"
cp -r "$site/nvidia_pytriton.libs" "$out/stage/"
find "$out/stage" -name __pycache__ -prune -exec rm -rf {} +
tar -C "$out/stage" -cf - . | xz -T0 -6 > "$out/triton.tar.xz"
rm -rf "$out/stage"
for spec in numpy==1.26.4 python-rapidjson==1.25 tritonclient==2.73.0; do
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$out/wheels" "$spec"
done
cp "$(.venv/bin/python -c 'from wingpt.tokenizer import find_tiktoken_file; print(find_tiktoken_file(None))')" \
  "$out/dashscope/resources/"
du -sh "$out"
