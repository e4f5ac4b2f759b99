#!/usr/bin/env bash
# Replication against Redis, in one run. See docs/performance.md
# ("Replication").
#
#   tests/bench/bench-replication.sh [OPTIONS]
#
#   --rounds R       rounds of the throughput workloads (default 3)
#   --requests N     requests per run (default 100000)
#   --keys N         key space of the throughput workloads (default 100000)
#   --sync-keys N    keys in the full-sync measurement (default 2000000;
#                    0 skips it)
#   --out DIR        results (default build/bench-out-repl)
#   --kvd PATH       use this kvd binary instead of building one
#   -h, --help       this text
#
# What it measures, every server on 127.0.0.1 on a free port in a fresh
# directory, fsync on every write everywhere (kvd --fsync always, Redis
# appendonly yes + appendfsync always, on primaries and replicas):
#  1. durable SET, redis-benchmark -c 50 -P 1 -d 100: kvd alone, kvd with
#     one asynchronous replica, Redis alone, Redis with one replica; the
#     four in an order that alternates from round to round. Ratios: kvd
#     with a replica / Redis with a replica, kvd alone / Redis alone, and
#     kvd with a replica / kvd alone.
#  2. writes a replica holds before the reply, 50 connections, one
#     request in flight each (kv_bench_pairs): kvd --sync-replicas 1
#     (SET), Redis with a replica (SET and WAIT 1 0 in one pipeline), and
#     kvd asynchronous (SET and WAIT 1 0) for reference; requests per
#     second, p50, p99.
#  3. full sync: N keys of 100 bytes loaded into a primary (redis-cli
#     --pipe), then a fresh replica told REPLICAOF; seconds until it has
#     caught up, and bytes the primary sent (kvd: repl_bytes_sent; Redis:
#     total_net_repl_output_bytes).
# Writes OUT/results.md, OUT/throughput.csv and OUT/replication.png
# (gnuplot). Every server is stopped and every directory removed at exit.
#
# Not part of the test suite: timings on a shared machine are noisy.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
rounds=3 requests=100000 keys=100000 sync_keys=2000000 out=build/bench-out-repl kvd_bin=""
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) rounds=$2; shift ;;
    --requests) requests=$2; shift ;;
    --keys) keys=$2; shift ;;
    --sync-keys) sync_keys=$2; shift ;;
    --out) out=$2; shift ;;
    --kvd) kvd_bin=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench-replication.sh: unknown option '$1' (--help lists them)" >&2; exit 2 ;;
    esac
    shift
done

. ./deps.sh
kv_ensure_packages "${KV_BUILD_PACKAGES[@]}" redis-server redis-tools python3 gnuplot-nox
echo "building kvd and kv_bench_pairs (Release) in build/bench" >&2
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DKV_TESTS=OFF >/dev/null
cmake --build build/bench -j "$(nproc)" --target kvd kv_bench_pairs >/dev/null
[ -n "$kvd_bin" ] || kvd_bin=$root/build/bench/kv/kvd
pairs=$root/build/bench/tests/bench/kv_bench_pairs
helper=$root/tests/bench/bench_helper.py

mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/kvd-bench-repl.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
cli() { redis-cli -h 127.0.0.1 -p "$@"; }
wait_ping() {
    for _ in $(seq 200); do cli "$1" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "bench-replication.sh: the server on port $1 did not start" >&2
    exit 1
}
info_field() { cli "$1" info "$2" | tr -d '\r' | sed -n "s/^$3://p"; }

# start_kvd NAME [flags...]: starts a kvd; its port is left in $port
start_kvd() {
    local name=$1
    shift
    port=$(free_port)
    mkdir -p "$work/$name"
    "$kvd_bin" --bind 127.0.0.1 --port "$port" --dir "$work/$name/data" --fsync always --logfile "$work/$name.log" \
        "$@" >"$work/$name.out" 2>&1 &
    pids+=($!)
    wait_ping "$port"
}
start_redis() {
    local name=$1
    shift
    port=$(free_port)
    mkdir -p "$work/$name"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$work/$name" --appendonly yes --appendfsync always \
        --save '' --logfile "$work/$name.log" "$@" >"$work/$name.out" 2>&1 &
    pids+=($!)
    wait_ping "$port"
}
linked() { # PRIMARY REPLICA: the replica is up and has the primary's offset
    local want have
    want=$(info_field "$1" replication master_repl_offset)
    have=$(info_field "$2" replication slave_repl_offset)
    [ "$(info_field "$2" replication master_link_status)" = up ] && [ -n "$have" ] && [ "$have" -ge "$want" ]
}
wait_linked() {
    for _ in $(seq 6000); do linked "$1" "$2" && return 0; sleep 0.05; done
    echo "bench-replication.sh: replica $2 did not catch up with $1" >&2
    exit 1
}

start_kvd kvd-alone; kA=$port
start_kvd kvd-primary; kP=$port
start_kvd kvd-replica --replicaof "127.0.0.1 $kP"; kR=$port
start_kvd kvd-sync --sync-replicas 1; kS=$port
start_kvd kvd-sync-replica --replicaof "127.0.0.1 $kS"; kSR=$port
start_redis redis-alone; rA=$port
start_redis redis-primary; rP=$port
start_redis redis-replica --replicaof 127.0.0.1 "$rP"; rR=$port
wait_linked "$kP" "$kR"
wait_linked "$kS" "$kSR"
wait_linked "$rP" "$rR"

csv=$out/throughput.csv
echo "round,setup,rps" >"$csv"
setups=(kvd-alone kvd-replica redis-alone redis-replica)
port_of() { case $1 in kvd-alone) echo "$kA" ;; kvd-replica) echo "$kP" ;; redis-alone) echo "$rA" ;; redis-replica) echo "$rP" ;; esac; }
for r in $(seq "$rounds"); do
    order=("${setups[@]}")
    if [ $((r % 2)) = 0 ]; then order=(redis-replica redis-alone kvd-replica kvd-alone); fi
    for s in "${order[@]}"; do
        rps=$(redis-benchmark -h 127.0.0.1 -p "$(port_of "$s")" -t set -c 50 -P 1 -d 100 -r "$keys" -n "$requests" \
            --csv 2>/dev/null | tail -1 | cut -d, -f2 | tr -d '"')
        echo "$r,$s,$rps" >>"$csv"
        echo "round $r: $s SET -c 50 -P 1: $rps ops/s" >&2
    done
done
wait_linked "$kP" "$kR"
wait_linked "$rP" "$rR"

pairs_out=$out/pairs.txt
: >"$pairs_out"
for r in $(seq "$rounds"); do
    for s in kvd-sync redis-set-wait kvd-set-wait; do
        case $s in
        kvd-sync) line=$("$pairs" "$kS" 50 "$requests") ;;
        redis-set-wait) line=$("$pairs" "$rP" 50 "$requests" --wait) ;;
        kvd-set-wait) line=$("$pairs" "$kP" 50 "$requests" --wait) ;;
        esac
        echo "$r $s $line" >>"$pairs_out"
        echo "round $r: $s: $line" >&2
    done
done

sync_out=$out/fullsync.txt
: >"$sync_out"
if [ "$sync_keys" -gt 0 ]; then
    for kind in kvd redis; do
        if [ $kind = kvd ]; then start_kvd kvd-fill; else start_redis redis-fill; fi
        p=$port
        /usr/bin/python3 "$helper" gen "$sync_keys" 100 | redis-cli -h 127.0.0.1 -p "$p" --pipe >/dev/null
        if [ $kind = kvd ]; then start_kvd kvd-fresh; else start_redis redis-fresh; fi
        q=$port
        before=$(info_field "$p" replication repl_bytes_sent)
        [ $kind = redis ] && before=$(info_field "$p" stats total_net_repl_output_bytes)
        t0=$(date +%s.%N)
        cli "$q" replicaof 127.0.0.1 "$p" >/dev/null
        wait_linked "$p" "$q"
        t1=$(date +%s.%N)
        if [ $kind = kvd ]; then after=$(info_field "$p" replication repl_bytes_sent); else
            after=$(info_field "$p" stats total_net_repl_output_bytes); fi
        echo "$kind keys=$sync_keys seconds=$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}") bytes=$((after - before))" \
            | tee -a "$sync_out" >&2
    done
fi

/usr/bin/python3 - "$out" <<'EOF'
import collections, statistics, sys
out = sys.argv[1]
rows = [l.strip().split(",") for l in open(out + "/throughput.csv")][1:]
by = collections.defaultdict(list)
for r, s, v in rows:
    by[s].append(float(v))
m = {s: statistics.median(v) for s, v in by.items()}
lines = ["# Replication benchmark", "", "## Durable SET -c 50 -P 1 -d 100 (median of %d rounds)" % len(by["kvd-alone"]), "",
         "| setup | ops/s |", "|---|---:|"]
lines += ["| %s | %.0f |" % (s, m[s]) for s in ("kvd-alone", "kvd-replica", "redis-alone", "redis-replica")]
lines += ["", "kvd/Redis alone: %.2f; kvd/Redis with a replica: %.2f; kvd with a replica / kvd alone: %.2f" %
          (m["kvd-alone"] / m["redis-alone"], m["kvd-replica"] / m["redis-replica"], m["kvd-replica"] / m["kvd-alone"]), ""]
pr = collections.defaultdict(list)
for l in open(out + "/pairs.txt"):
    f = l.split()
    d = dict(x.split("=", 1) for x in f[2:] if "=" in x)
    pr[f[1]].append(d)
lines += ["## A write the replica holds before the reply: 50 connections, one request each", "",
          "| setup | ops/s | p50 µs | p99 µs |", "|---|---:|---:|---:|"]
for s, ds in pr.items():
    lines.append("| %s | %.0f | %.0f | %.0f |" % (s, statistics.median(float(d["rps"]) for d in ds),
                 statistics.median(float(d["p50_us"]) for d in ds), statistics.median(float(d["p99_us"]) for d in ds)))
lines.append("")
try:
    fs = [l.strip() for l in open(out + "/fullsync.txt") if l.strip()]
except FileNotFoundError:
    fs = []
if fs:
    lines += ["## Full sync", "", "```"] + fs + ["```", ""]
open(out + "/results.md", "w").write("\n".join(lines))
with open(out + "/plot.dat", "w") as f:
    for s in ("kvd-alone", "kvd-replica", "redis-alone", "redis-replica"):
        f.write('"%s" %.0f\n' % (s, m[s]))
    for s, ds in pr.items():
        f.write('"%s" %.0f\n' % (s, statistics.median(float(d["rps"]) for d in ds)))
print("\n".join(lines))
EOF
gnuplot <<EOF || echo "bench-replication.sh: gnuplot failed; results.md has the figures" >&2
set terminal pngcairo size 900,450
set output "$out/replication.png"
set title "Durable writes with replication (ops/s, higher is better)"
set style fill solid 0.6
set boxwidth 0.6
set xtics rotate by -20
set grid ytics
unset key
plot "$out/plot.dat" using 0:2:xtic(1) with boxes
EOF
echo "bench-replication.sh: results in $out/results.md" >&2
