#!/usr/bin/env bash
# setup.sh — installs what asvr needs (Debian packages, as root), builds it, and optionally tests it.
#
#   ./setup.sh            install missing packages, build into build/ (release + CUDA when nvcc is found)
#   ./setup.sh demo       build (CPU-only, build-demo/), then run the embedded demo end to end
#                         (examples/demo/run.sh, into demo-run/)
#   ./setup.sh test       the full test suite: -Werror build + ctest, then ASan+UBSan build + ctest,
#                         then the libFuzzer harnesses (clang) for a short fixed time
#
# Idempotent: a second run installs nothing and rebuilds only what changed.
# Environment: JOBS (parallel build jobs, default nproc), ASVR_CMAKE_ARGS (extra cmake flags).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
JOBS=${JOBS:-$(nproc)}
MODE=${1:-build}

PACKAGES=(build-essential cmake pkg-config
          libturbojpeg0-dev libpng-dev libzstd-dev liblmdb-dev libjansson-dev libopenblas-dev libxxhash-dev libwebp-dev
          clang libclang-rt-dev gfortran openmpi-bin libopenmpi-dev)

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then return 0; fi
  echo "setup: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install packages: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# build DIR [cmake args...]
build() {
  local dir=$1; shift
  cmake -S "$ROOT" -B "$dir" ${ASVR_CMAKE_ARGS:-} "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS"
}

run_ctest() {
  local dir=$1; shift
  (cd "$dir" && ctest --output-on-failure "$@")
}

install_packages
case "$MODE" in
  build)
    build "$ROOT/build" -DCMAKE_BUILD_TYPE=Release
    echo "setup: built into build/ (tools in build/bin)" >&2
    ;;
  demo)
    # the demo runs on the CPU: a CPU-only release build of its own keeps it quick to build
    build "$ROOT/build-demo" -DCMAKE_BUILD_TYPE=Release -DASVR_CUDA=OFF
    exec "$ROOT/examples/demo/run.sh" "$ROOT/build-demo" "${2:-$ROOT/demo-run}"
    ;;
  test)
    echo "== build (-Werror, CUDA compiled when nvcc is present) ==" >&2
    build "$ROOT/build-ci" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DASVR_WERROR=ON
    run_ctest "$ROOT/build-ci" -j "$JOBS"
    echo "== ASan + UBSan ==" >&2
    build "$ROOT/build-asan" -DCMAKE_BUILD_TYPE=Debug -DASVR_WERROR=ON -DASVR_SANITIZE=ON -DASVR_CUDA=OFF
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      run_ctest "$ROOT/build-asan" -j "$JOBS" -LE slow
    echo "== libFuzzer (short fixed-time runs on the seed corpus) ==" >&2
    CC=clang build "$ROOT/build-fuzz" -DCMAKE_BUILD_TYPE=Debug -DASVR_FUZZ=ON -DASVR_SANITIZE=ON -DASVR_CUDA=OFF
    run_ctest "$ROOT/build-fuzz" -R '^fuzz_'
    ;;
  *)
    echo "usage: ./setup.sh [build|test|demo]" >&2
    exit 2
    ;;
esac
