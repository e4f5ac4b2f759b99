#!/bin/sh
# Builds kv_bench_recovery in a Release tree (build/bench under the
# repository root) and runs it; every argument is passed to the benchmark,
# e.g.  tests/bench/run-recovery-bench.sh --records 2000000 --batch
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
root=$(CDPATH='' cd -- "$here/../.." && pwd)
build="$root/build/bench"

# Quiet on success; the whole output on failure.
run_quiet() {
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        echo "run-recovery-bench.sh: failed: $*" >&2
        exit 1
    fi
}

echo "building kv_bench_recovery (Release) in $build" >&2
run_quiet cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DKV_TESTS=OFF
run_quiet cmake --build "$build" --target kv_bench_recovery --parallel

exec "$build/tests/bench/kv_bench_recovery" "$@"
