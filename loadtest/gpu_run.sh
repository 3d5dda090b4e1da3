#!/usr/bin/env bash
# On the GPU machine: make a throwaway virtual environment from .gpu-bundle (scripts/gpu_bundle.sh) on
# top of the machine's PyTorch environment, then run the capacity benchmark in it.
#   bash loadtest/gpu_run.sh --out DIR [--part all|engine|serving] [--levels 1,8,32,64,128]
#
# Why a venv of its own: Triton's python backend stub starts the interpreter found first on PATH,
# with that interpreter's site-packages (PYTHONPATH does not come first there). The 2.51 stub misreads
# BYTES tensors under numpy 2 (it sees garbage instead of the request), so the stub must see numpy 1.26
# before the machine's numpy 2; the machine's scipy/scikit-learn need numpy 2, and transformers imports
# them when present (for assisted generation and detection losses, not used here), so they are hidden.
# The machine's own environment is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
base_python=${GPU_PYTHON:-python3}
venv=/tmp/wingpt-gpu-venv
if [[ ! -x $venv/bin/python3 ]]; then
  machine_site=$("$base_python" -c 'import site; print(site.getsitepackages()[0])')
  "$base_python" -m venv --without-pip "$venv"
  site=$("$venv/bin/python3" -c 'import site; print(site.getsitepackages()[0])')
  "$base_python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    .gpu-bundle/wheels/*.whl
  xz -dc .gpu-bundle/triton.tar.xz | tar -C "$site" -xf -
  cp -r .gpu-bundle/dashscope "$site/"
  echo 'import sys; [sys.modules.setdefault(m, None) for m in ("sklearn", "scipy")]' > "$site/00-wingpt-hide.pth"
  echo "$machine_site" > "$site/zz-machine-site.pth"  # torch, transformers, ... after our own packages
fi
export PYTHONPATH=$PWD:$PWD/client PYTHONUNBUFFERED=1
exec "$venv/bin/python3" -m loadtest.gpu_capacity "$@"
