#!/usr/bin/env bash
# SET latency while kvd compacts, against the same workload without a
# compaction, in one run. See docs/performance.md ("Online compaction").
#
#   tests/bench/bench-compaction-latency.sh [OPTIONS]
#
#   --keys N       distinct keys (default 1000000)
#   --rounds R     times every key is written before the measurement
#                  (default 3: about two thirds of the log is dead)
#   --requests N   SETs per measured redis-benchmark run (default 200000)
#   --runs R       measured runs of each kind, alternating (default 3)
#   --out DIR      where results go (default build/bench-out/compaction)
#   --kvd PATH     use this kvd binary instead of building one
#   -h, --help     this text
#
# What it does: installs what is missing (deps.sh), builds kvd (Release,
# build/bench), starts it on 127.0.0.1 on a free port with --fsync always,
# a 16 MiB segment size and automatic compaction off, writes every key
# R times with redis-benchmark (100-byte values) so that most of the log
# is dead, then alternates:
#   - quiet: redis-benchmark SET -c 50 -P 1 -d 100 -r KEYS with no
#     compaction running;
#   - compacting: COMPACT, then the same redis-benchmark at once; the run
#     counts only if the compaction was still running when it ended (INFO
#     compaction_in_progress), else it is repeated with more requests.
# Each compacting run is followed by new overwrites so that the next one
# has work again. Reported: ops/s, p50, p99, max (redis-benchmark --csv)
# per run, the key directory switch time (INFO compaction_last_switch_ms),
# and the medians with the ratio compacting / quiet, in
# OUT/results.md and OUT/runs.csv.
#
# Not part of the test suite: timings on a shared machine are noisy.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
keys=1000000 rounds=3 requests=200000 runs=3 out="$root/build/bench-out/compaction" kvd_bin=""
while [ $# -gt 0 ]; do
    case "$1" in
    --keys) keys=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --requests) requests=$2; shift ;;
    --runs) runs=$2; shift ;;
    --out) out=$2; shift ;;
    --kvd) kvd_bin=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench-compaction-latency.sh: unknown option '$1' (--help lists them)" >&2; exit 2 ;;
    esac
    shift
done

. ./deps.sh
kv_ensure_packages "${KV_BUILD_PACKAGES[@]}" redis-tools python3
py=/usr/bin/python3
if [ -z "$kvd_bin" ]; then
    echo "building kvd (Release) in build/bench" >&2
    cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DKV_TESTS=OFF >/dev/null
    cmake --build build/bench -j "$(nproc)" --target kvd >/dev/null
    kvd_bin="$root/build/bench/kv/kvd"
fi
kvd_bin=$(realpath "$kvd_bin")
mkdir -p "$out"
out=$(realpath "$out")
work=$(mktemp -d "${TMPDIR:-/tmp}/kvd-compaction-bench.XXXXXX")
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$kvd_bin" --bind 127.0.0.1 --port "$port" --dir "$work/data" --fsync always --segment-size 16mb \
    --compact-dead-ratio 0 --logfile "$work/kvd.log" &
pid=$!
for _ in $(seq 500); do redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break; sleep 0.02; done
cli() { redis-cli -p "$port" "$@"; }
info() { cli info persistence | tr -d '\r' | awk -F: -v k="$1" '$1==k{print $2}'; }

fill() { # writes every key once (sequential key space, pipelined)
    redis-benchmark -h 127.0.0.1 -p "$port" -t set -d 100 -c 50 -P 32 -n "$keys" -r "$keys" -q >/dev/null
}
log "writing $keys keys $rounds times"
for _ in $(seq "$rounds"); do fill; done
log "log: $(info log_bytes) bytes, dead $(info dead_bytes)"

bench() { # prints "rps,p50,p99,max" (ms) of one SET run
    redis-benchmark -h 127.0.0.1 -p "$port" -t set -d 100 -c 50 -P 1 -n "$1" -r "$keys" --csv |
        tr -d '"' | awk -F, '$1=="SET"{print $2","$5","$7","$8}'
}
wait_idle() { while [ "$(info compaction_in_progress)" = 1 ]; do sleep 0.1; done; }

echo "kind,run,rps,p50_ms,p99_ms,max_ms,switch_ms" >"$out/runs.csv"
for r in $(seq "$runs"); do
    wait_idle
    line=$(bench "$requests")
    echo "quiet,$r,$line," >>"$out/runs.csv"
    log "quiet $r: $line"
    n=$requests
    while :; do
        before=$(info compactions)
        cli compact >/dev/null
        line=$(bench "$n")
        still=$(info compaction_in_progress)
        if [ "$still" = 1 ]; then
            wait_idle
            sw=$(info compaction_last_switch_ms)
            echo "compacting,$r,$line,$sw" >>"$out/runs.csv"
            log "compacting $r: $line (compaction still running at the end; key directory switch $sw ms)"
            break
        fi
        log "compaction ended before the run (compactions $before -> $(info compactions)); rewriting and retrying with fewer requests"
        wait_idle
        fill
        n=$((n / 2))
        [ "$n" -ge 10000 ] || { echo "compaction too short to measure: use more --keys" >&2; exit 1; }
    done
    fill # dead bytes again for the next compaction
done

$py - "$out" <<'EOF'
import csv, statistics, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(out + "/runs.csv")))
def med(kind, col):
    return statistics.median(float(r[col]) for r in rows if r["kind"] == kind)
md = ["# SET latency during an online compaction", "",
      "redis-benchmark SET -c 50 -P 1 -d 100, kvd --fsync always, medians over the runs "
      "(every run in runs.csv).", "",
      "| | ops/s | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]
for kind in ("quiet", "compacting"):
    md.append("| %s | %.0f | %.3f | %.3f | %.3f |" % (kind, med(kind, "rps"), med(kind, "p50_ms"),
                                                     med(kind, "p99_ms"), med(kind, "max_ms")))
md.append("| compacting / quiet | %.2f | %.2f | %.2f | %.2f |" % tuple(
    med("compacting", c) / med("quiet", c) for c in ("rps", "p50_ms", "p99_ms", "max_ms")))
md.append("")
md.append("Key directory switch (the only time readers and writers wait for the compaction), "
          "median: %.1f ms." % med("compacting", "switch_ms"))
open(out + "/results.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
log "results in $out"
