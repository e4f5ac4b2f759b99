#!/usr/bin/env bash
# Time-boxed AFL++ campaigns for every fuzz target, as CI runs them.
#
#   fuzz/campaign.sh                 # each target for KV_FUZZ_SECONDS (default 60)
#   KV_FUZZ_SECONDS=600 fuzz/campaign.sh resp   # one target, longer
#   KV_FUZZ_SECONDS=0 fuzz/campaign.sh          # build only, no campaign
#
# Builds each target twice with afl-clang-fast: with ASan + UBSan (the
# binary that is fuzzed) and with CMPLOG (comparison logging, given to
# afl-fuzz with -c so it can solve magic values and checksums). Runs
# afl-fuzz on the seed corpus with the target's dictionary, then FAILS if
# the campaign saved any crash or hang: afl-fuzz itself exits 0 either way,
# so this script looks in the output's crashes/ and hangs/ folders and
# prints the sanitizer report of each saved input (replayed through the
# ASan binary). Prints exec/s, total execs and edge coverage per target.
# Output goes to build/fuzz-out/<target>/ (KV_FUZZ_OUT to change).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. ./deps.sh
kv_ensure_packages "${KV_BUILD_PACKAGES[@]}" afl++ clang libclang-rt-14-dev

seconds=${KV_FUZZ_SECONDS:-60}
out_root=${KV_FUZZ_OUT:-$root/build/fuzz-out}
targets=("$@")
if ((${#targets[@]} == 0)); then targets=(hint log_reader repl_stream resp store_model); fi
jobs=$(nproc)

build() { # dir, extra cmake args...
    local dir=$1
    shift
    CC=afl-clang-fast cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKV_TESTS=OFF -DKV_FUZZ_ENGINE=afl \
        "$@" >/dev/null
    for t in "${targets[@]}"; do
        cmake --build "$dir" -j "$jobs" --target "fuzz_$t" >/dev/null
    done
}
echo "campaign: building ${targets[*]} (ASan + UBSan, and CMPLOG)"
export AFL_QUIET=1
build build/fuzz-afl -DKV_SANITIZE=ON
AFL_LLVM_CMPLOG=1 build build/fuzz-cmplog -DKV_SANITIZE=OFF
if [ "$seconds" -eq 0 ]; then
    echo "campaign: KV_FUZZ_SECONDS=0, built only"
    exit 0
fi

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
export AFL_SKIP_CRASHES=1 # a seed that crashes is reported below, not a reason to refuse to start
export ASAN_OPTIONS=abort_on_error=1:symbolize=0:detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1

failed=0
summary=()
for t in "${targets[@]}"; do
    out=$out_root/$t
    rm -rf "$out"
    mkdir -p "$out"
    echo "campaign: fuzz_$t for ${seconds}s"
    afl-fuzz -V "$seconds" -m none -t 2000 -i "fuzz/corpus/$t" -o "$out" -x "fuzz/$t.dict" \
        -c "build/fuzz-cmplog/fuzz/fuzz_$t" -- "build/fuzz-afl/fuzz/fuzz_$t" >"$out/afl.log" 2>&1 || {
        echo "campaign: afl-fuzz failed for $t:"
        tail -20 "$out/afl.log"
        failed=1
        continue
    }
    stats=$out/default/fuzzer_stats
    get() { awk -F' *: *' -v k="$1" '$1 == k {print $2}' "$stats"; }
    summary+=("$(printf '%-12s execs %10s  exec/s %8s  edges %6s  coverage %7s  crashes %s  hangs %s' "$t" \
        "$(get execs_done)" "$(get execs_per_sec)" "$(get edges_found)" "$(get bitmap_cvg)" \
        "$(get saved_crashes)" "$(get saved_hangs)")")
    found=0
    for kind in crashes hangs; do
        shown=0
        for f in "$out/default/$kind"/id:*; do
            [ -e "$f" ] || continue
            found=$((found + 1))
            echo "campaign: fuzz_$t saved a ${kind%es}: $f"
            if [ "$shown" -lt 3 ]; then # the first reports are enough to start triage
                shown=$((shown + 1))
                echo "----- input (hex) -----"
                od -An -tx1 -v "$f" | head -8
                echo "----- report -----"
                report=$(ASAN_OPTIONS=abort_on_error=1:symbolize=1:detect_leaks=1 \
                    timeout 20 "build/fuzz-afl/fuzz/fuzz_$t" "$f" 2>&1) || true
                printf '%s\n' "$report" | grep -v '^$' | tail -30
                echo "------------------"
            fi
        done
    done
    if [ "$found" -gt 0 ]; then failed=1; fi
done
echo "campaign results (${seconds}s per target):"
printf '  %s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "campaign: FAILED: a target crashed or hung (inputs and reports above; see docs/fuzzing.md for triage)"
    exit 1
fi
echo "campaign: passed, no crash or hang"
