#!/bin/sh
# Makes sure the TensorRT-LLM engine for this checkpoint + build settings is in the shared engine cache, so that it
# is built once and every replica, restart and upgrade with the same settings reuses it.
#
#   prepare-engine.sh build [build_engine flags...]   build it unless cached. Replicas starting together race for a
#                                                     lock directory (mkdir is atomic, NFS included): one builds,
#                                                     the others wait for it.
#   prepare-engine.sh wait                            wait for the engine-build Job to finish it
#   prepare-engine.sh check                           fail at once unless it is there (engine built elsewhere)
#
# Environment: ENGINE_DIR (the cache entry, keyed by the chart; Triton loads $ENGINE_DIR/engine), CHECKPOINT_DIR,
# BUILD_INFO (JSON recorded beside the engine), TIMEOUT_SECONDS (longest build; older locks are stale),
# POLL_SECONDS, PYTHON.
# An entry is complete when it holds BUILD_COMPLETE: the engine is built under a temporary name, the marker is
# written, then the directory is renamed into place, so a half-written engine is never seen as complete.
set -eu

mode=${1:?usage: prepare-engine.sh build|wait|check [build_engine flags...]}
shift
: "${ENGINE_DIR:?}"
timeout=${TIMEOUT_SECONDS:-7200}
poll=${POLL_SECONDS:-10}
me=${HOSTNAME:-$(hostname)}
lock="$ENGINE_DIR.lock"

log() { echo "prepare-engine: $*" >&2; }
cached() { [ -f "$ENGINE_DIR/BUILD_COMPLETE" ]; }

# Takes the build lock; returns 1 when another pod completed the engine meanwhile.
acquire() {
  while ! mkdir "$lock" 2>/dev/null; do
    cached && return 1
    owner=$(cat "$lock/owner" 2>/dev/null || echo unknown)
    if [ "$owner" = "$me" ]; then
      log "taking over the lock this pod held before it restarted"
      return 0
    fi
    age=$(($(date +%s) - $(stat -c %Y "$lock")))
    if [ "$age" -gt "$timeout" ]; then
      log "removing the lock of $owner: ${age}s old, longer than any build (${timeout}s)"
      rm -rf "$lock"
      continue
    fi
    log "$owner is building $ENGINE_DIR (${age}s so far); waiting"
    sleep "$poll"
  done
  echo "$me" >"$lock/owner"
}

build() {
  : "${CHECKPOINT_DIR:?}"
  partial="$ENGINE_DIR.partial"
  rm -rf "$partial"
  log "building $ENGINE_DIR from $CHECKPOINT_DIR"
  "${PYTHON:-python3}" -m build_engine --model-dir "$CHECKPOINT_DIR" --output-root "$partial" "$@"
  # build_engine names its directory after the settings (engine/, tllm_checkpoint/, calib/, build.json); the
  # cache entry is keyed by the chart already, so that directory becomes the entry itself.
  set -- "$partial"/*/
  if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    log "expected one engine directory in $partial, found: $*"
    exit 1
  fi
  built=${1%/}
  printf '%s\n' "${BUILD_INFO:-null}" >"$built/build-info.json"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$built/BUILD_COMPLETE"
  rm -rf "$ENGINE_DIR"
  mv "$built" "$ENGINE_DIR"
  rm -rf "$partial"
}

if cached; then
  log "cache hit: $ENGINE_DIR"
  exit 0
fi

case $mode in
  check)
    log "no engine in $ENGINE_DIR (engine.build.mode=prebuilt): copy there the directory python -m build_engine"
    log "made with the chart's settings (engine/ inside) plus an empty BUILD_COMPLETE file, or use"
    log "engine.build.mode=initContainer or job"
    exit 1
    ;;
  wait)
    waited=0
    until cached; do
      if [ "$waited" -ge "$timeout" ]; then
        log "no engine in $ENGINE_DIR after ${timeout}s: see the logs of the engine-build Job"
        exit 1
      fi
      log "waiting for the engine-build Job to fill $ENGINE_DIR (${waited}s)"
      sleep "$poll"
      waited=$((waited + poll))
    done
    ;;
  build)
    if acquire; then
      trap 'rm -rf "$lock"' EXIT
      trap 'exit 143' TERM INT
      cached || build "$@"
    fi
    ;;
  *)
    log "unknown mode '$mode' (build, wait or check)"
    exit 2
    ;;
esac
log "engine ready: $ENGINE_DIR"
