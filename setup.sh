#!/usr/bin/env bash
# setup.sh — installs what asvr needs (Debian packages, as root), builds it, and optionally tests it.
#
#   ./setup.sh            install missing packages, build into build/ (release + CUDA when nvcc is found)
#   ./setup.sh demo       build (CPU-only, build-demo/), then run the embedded demo end to end
#                         (examples/demo/run.sh, into demo-run/)
#   ./setup.sh test       the full test suite: -Werror build + ctest, then ASan+UBSan build + ctest
#                         (without the slow tests), then the libFuzzer harnesses (clang) for a short fixed time
#   ./setup.sh test LABEL...   only the tests with one of these ctest labels (tests/CMakeLists.txt):
#                         unit (C unit tests), cli (shell tests of the executables), emu (CUDA tests on
#                         the CPU stand-in), gpu (need a real GPU), slow (over ~10 s); e.g.
#                         `./setup.sh test unit cli`. ASVR_TEST_LABELS="unit cli" does the same. The ASan
#                         stage still leaves slow tests out unless slow is named; the fuzz stage runs
#                         only when unit or slow is named. A test that cannot run here (no GPU, no CUDA
#                         build, absent optional data) is reported as skipped, not passed.
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
    IFS=', ' read -r -a labels <<< "${ASVR_TEST_LABELS:-} ${*:2}"
    pick=() asan_pick=(-LE slow) fuzz=1
    if [ ${#labels[@]} -gt 0 ]; then
      for l in "${labels[@]}"; do
        case "$l" in unit|cli|emu|gpu|slow) ;; *) echo "setup: unknown test label '$l' (unit cli emu gpu slow)" >&2; exit 2 ;; esac
      done
      pick=(-L "^($(IFS='|'; echo "${labels[*]}"))\$")
      asan_pick=("${pick[@]}")
      [[ " ${labels[*]} " == *" slow "* ]] || asan_pick+=(-LE slow)
      [[ " ${labels[*]} " == *" unit "* || " ${labels[*]} " == *" slow "* ]] || fuzz=0
      echo "setup: tests labelled ${labels[*]}" >&2
    fi
    echo "== build (-Werror, CUDA compiled when nvcc is present) ==" >&2
    build "$ROOT/build-ci" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DASVR_WERROR=ON
    run_ctest "$ROOT/build-ci" -j "$JOBS" ${pick[@]+"${pick[@]}"}
    echo "== ASan + UBSan ==" >&2
    build "$ROOT/build-asan" -DCMAKE_BUILD_TYPE=Debug -DASVR_WERROR=ON -DASVR_SANITIZE=ON -DASVR_CUDA=OFF
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      run_ctest "$ROOT/build-asan" -j "$JOBS" "${asan_pick[@]}"
    if [ $fuzz -eq 1 ]; then
      echo "== libFuzzer (short fixed-time runs on the seed corpus) ==" >&2
      CC=clang build "$ROOT/build-fuzz" -DCMAKE_BUILD_TYPE=Debug -DASVR_FUZZ=ON -DASVR_SANITIZE=ON -DASVR_CUDA=OFF
      run_ctest "$ROOT/build-fuzz" -R '^fuzz_' ${pick[@]+"${pick[@]}"}
    fi
    ;;
  *)
    echo "usage: ./setup.sh [build|test [LABEL...]|demo]" >&2
    exit 2
    ;;
esac
