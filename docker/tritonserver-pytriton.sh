#!/bin/sh
# `tritonserver` for the app image: runs the real Triton binary shipped in the nvidia-pytriton wheel with the
# shared libraries and backend directory that wheel carries, so the chart starts Triton the same way on CPU as in
# NVIDIA's GPU images.
set -eu
site=$(python -c 'import os, pytriton; print(os.path.dirname(os.path.dirname(pytriton.__file__)))')
export LD_LIBRARY_PATH="$site/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$site/pytriton/tritonserver/bin/tritonserver" --backend-directory="$site/pytriton/tritonserver/backends" "$@"
