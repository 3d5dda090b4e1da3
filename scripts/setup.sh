#!/usr/bin/env bash
# Create .venv and install every requirements/*.txt into it; re-runs only when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The UI's browser tests drive Debian's Chromium (no browser download); a CJK font makes their screenshots readable.
if [[ ! -x /usr/bin/chromium || ! -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing chromium and fonts-wqy-microhei (UI browser tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-wqy-microhei >/dev/null
  else
    echo "setup: /usr/bin/chromium is missing and this is not root: apt-get install chromium fonts-wqy-microhei" >&2
  fi
fi
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=.venv/.requirements.sha
want=$(cat requirements/*.txt | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
echo "setup: installing requirements into .venv (first run takes a few minutes)"
# torch first, pinned to the CPU build, so nothing below pulls in a CUDA build.
.venv/bin/python -m pip install -q -r requirements/torch.txt
args=()
for f in requirements/*.txt; do args+=(-r "$f"); done
.venv/bin/python -m pip install -q "${args[@]}"
echo "$want" >"$stamp"
