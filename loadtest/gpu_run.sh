#!/usr/bin/env bash
# On the GPU machine: install .gpu-bundle (scripts/gpu_bundle.sh) into /tmp/wingpt-site, then run the
# capacity benchmark. Usage: bash loadtest/gpu_run.sh --out DIR [--part all|engine|serving] [--levels ...]
set -euo pipefail
cd "$(dirname "$0")/.."
site=/tmp/wingpt-site
if [[ ! -d $site/pytriton ]]; then
  mkdir -p "$site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .gpu-bundle/wheels/*.whl
  xz -dc .gpu-bundle/triton.tar.xz | tar -C "$site" -xf -
  cp -r .gpu-bundle/dashscope "$site/"
fi
export PYTHONPATH=$site:$PWD:$PWD/client PYTHONUNBUFFERED=1
exec python3 -m loadtest.gpu_capacity "$@"
