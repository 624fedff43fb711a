#!/usr/bin/env bash
# Build and run the C driver of the sphere pool (tests/c/test_spheres.c)
# three times: a normal optimised build, a ThreadSanitizer build and an
# AddressSanitizer + UndefinedBehaviorSanitizer build. Exits non-zero on any
# failed check, hang (the driver has a watchdog) or sanitizer report.
#
# Usage: tests/c/run.sh [normal|tsan|asan ...]   (default: all three)
# Env:   CC (default gcc), BUILD_DIR (default: a fresh temporary directory),
#        BENCH=1 to print the per-run overhead in the normal build.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CSRC="$ROOT/csrc"
CC="${CC:-gcc}"
OWN_BUILD=0
if [[ -z "${BUILD_DIR:-}" ]]; then
    BUILD_DIR="$(mktemp -d "${TMPDIR:-/tmp}/cllm-ctest.XXXXXX")"
    OWN_BUILD=1
fi
cleanup() { if [[ $OWN_BUILD == 1 ]]; then rm -rf "$BUILD_DIR"; fi; }
trap cleanup EXIT

VARIANTS=("$@")
if [[ ${#VARIANTS[@]} -eq 0 ]]; then VARIANTS=(normal tsan asan); fi

BASE=(-std=gnu11 -Wall -Wextra -pthread -fno-strict-aliasing -I"$CSRC")
# Files owned by the pool work (and the driver) must be warning-free; the
# rest of csrc is compiled with warnings shown but not fatal, so that an
# in-progress file elsewhere does not mask a pool failure.
STRICT=(runtime/spheres.c)

build() {  # build <variant> <out-binary> <flags...>
    local variant="$1" out="$2"; shift 2
    local flags=("$@") objdir="$BUILD_DIR/$variant" pids=() objs=()
    mkdir -p "$objdir"
    while IFS= read -r -d '' src; do
        local rel name extra=()
        rel="${src#"$CSRC"/}"
        name="${rel//\//_}"   # runtime/spheres.c -> runtime_spheres.c (unique object names)
        for s in "${STRICT[@]}"; do [[ $rel == "$s" ]] && extra=(-Werror); done
        objs+=("$objdir/${name%.c}.o")
        if [[ ${#extra[@]} -gt 0 ]]; then
            "$CC" "${BASE[@]}" "${flags[@]}" "${extra[@]}" -c "$src" -o "$objdir/${name%.c}.o" &
        else
            "$CC" "${BASE[@]}" "${flags[@]}" -c "$src" -o "$objdir/${name%.c}.o" 2>"$objdir/${name%.c}.log" &
        fi
        pids+=($!)
    done < <(find "$CSRC" -name '*.c' -print0 | sort -z)
    "$CC" "${BASE[@]}" "${flags[@]}" -Werror -c "$HERE/test_spheres.c" -o "$objdir/test_spheres.o" &
    pids+=($!)
    local ok=0
    for p in "${pids[@]}"; do wait "$p" || ok=1; done
    for log in "$objdir"/*.log; do
        if [[ -s "$log" ]]; then
            echo "note: $(grep -c "warning:" "$log" || true) warning(s) in $(basename "${log%.log}").c (not fatal here; set BUILD_DIR to keep $log)"
            if [[ $ok != 0 ]]; then cat "$log" >&2; fi
        fi
    done
    if [[ $ok != 0 ]]; then echo "BUILD FAILED ($variant)" >&2; return 1; fi
    "$CC" "${flags[@]}" -pthread -Wl,--wrap=pthread_create "$objdir/test_spheres.o" "${objs[@]}" -lm -o "$out"
}

status=0
for v in "${VARIANTS[@]}"; do
    bin="$BUILD_DIR/test_spheres_$v"
    echo "=== $v build"
    case "$v" in
    normal)
        build normal "$bin" -O2 -Werror=implicit-function-declaration
        args=()
        if [[ "${BENCH:-0}" == 1 ]]; then args=(--bench); fi
        echo "=== $v run"
        "$bin" "${args[@]}" || status=1
        ;;
    tsan)
        build tsan "$bin" -fsanitize=thread -O1 -g -fno-omit-frame-pointer
        echo "=== $v run"
        # exitcode=66 makes any report fail the run even if halting is off.
        TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
            "$bin" --quick || status=1
        ;;
    asan)
        build asan "$bin" -fsanitize=address,undefined -fno-sanitize-recover=undefined -O1 -g \
            -fno-omit-frame-pointer
        echo "=== $v run"
        ASAN_OPTIONS="detect_leaks=1 abort_on_error=0 ${ASAN_OPTIONS:-}" \
        UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1 ${UBSAN_OPTIONS:-}" \
            "$bin" --quick || status=1
        ;;
    *)
        echo "unknown variant: $v" >&2
        status=1
        ;;
    esac
done
if [[ $status == 0 ]]; then echo "=== all C pool checks passed (${VARIANTS[*]})"; else echo "=== C pool checks FAILED" >&2; fi
exit $status
