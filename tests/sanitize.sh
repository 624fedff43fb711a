#!/usr/bin/env bash
# Run the pytest suite against an AddressSanitizer + UndefinedBehaviorSanitizer
# build of the C core (a copy of the package built in a temp dir, so the normal
# install is untouched). Any sanitizer report aborts the run (halt_on_error).
# Usage: bash tests/sanitize.sh [extra pytest args]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$root/cllm" "$root/csrc" "$root/tests" "$root/bench" "$root/setup.py" "$root/pyproject.toml" "$root/README.md" "$work/"
# tests also run the examples and tools when the tree has them
for d in examples tools docs; do if [[ -d "$root/$d" ]]; then cp -r "$root/$d" "$work/"; fi; done
rm -f "$work"/cllm/*.so
cd "$work"
CLLM_SANITIZE=address,undefined python setup.py -q build_ext --inplace >build.log 2>&1 || { cat build.log; exit 1; }
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
# leaks: CPython and torch keep allocations alive at exit by design, so leak
# checking is done by the C driver (tests/c/run.sh) instead.
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
PYTHONPATH="$work" python -m pytest -q -p no:cacheprovider -k "not c_driver" "$@" tests/
