#!/usr/bin/env bash
# Durable SET with and without segment preallocation, against Redis, on a
# file system of your choice, in one run. See docs/performance.md
# ("Preallocation").
#
#   tests/bench/bench-preallocate.sh [OPTIONS]
#
#   --dir DIR      put the three data directories under DIR, so that they
#                  are on the file system to measure (default: $TMPDIR or
#                  /tmp)
#   --rounds R     rounds, each running all three servers (default 4)
#   --requests N   SETs per redis-benchmark run (default 200000)
#   --keys N       key space (default 100000)
#   --kvd PATH     use this kvd binary instead of building one
#   -h, --help     this text
#
# What it does: installs what is missing (deps.sh), builds kvd (Release,
# build/bench), starts on 127.0.0.1, each on a free port and in a fresh
# directory under DIR: kvd --fsync always --preallocate no, kvd --fsync
# always --preallocate yes, and redis-server --appendonly yes
# --appendfsync always. It fills each with the key space, then runs
# redis-benchmark SET -c 50 -P 1 -d 100 against the three in every round,
# in an order that alternates from round to round. Printed: ops/s per
# round and server, the ratios kvd/Redis and yes/no per round and their
# means, and kvd's INFO fdatasync_avg_us and writes_per_group_commit. Every
# server is stopped and every directory removed at exit.
#
# Not part of the test suite: timings on a shared machine are noisy.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
base=${TMPDIR:-/tmp} rounds=4 requests=200000 keys=100000 kvd_bin=""
while [ $# -gt 0 ]; do
    case "$1" in
    --dir) base=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --requests) requests=$2; shift ;;
    --keys) keys=$2; shift ;;
    --kvd) kvd_bin=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench-preallocate.sh: unknown option '$1' (--help lists them)" >&2; exit 2 ;;
    esac
    shift
done

. ./deps.sh
kv_ensure_packages "${KV_BUILD_PACKAGES[@]}" redis-server redis-tools python3
if [ -z "$kvd_bin" ]; then
    echo "building kvd (Release) in build/bench" >&2
    cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DKV_TESTS=OFF >/dev/null
    cmake --build build/bench -j "$(nproc)" --target kvd >/dev/null
    kvd_bin=$root/build/bench/kv/kvd
fi

work=$(mktemp -d "$base/kvd-bench-prealloc.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
np=$(free_port) yp=$(free_port) rp=$(free_port)
mkdir -p "$work/no" "$work/yes" "$work/redis"
"$kvd_bin" --bind 127.0.0.1 --port "$np" --dir "$work/no" --fsync always --preallocate no --logfile "$work/no.log" &
pids+=($!)
"$kvd_bin" --bind 127.0.0.1 --port "$yp" --dir "$work/yes" --fsync always --preallocate yes --logfile "$work/yes.log" &
pids+=($!)
redis-server --bind 127.0.0.1 --port "$rp" --dir "$work/redis" --appendonly yes --appendfsync always --save '' \
    --logfile "$work/redis.log" &
pids+=($!)
for p in "$np" "$yp" "$rp"; do
    for _ in $(seq 100); do redis-cli -h 127.0.0.1 -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -h 127.0.0.1 -p "$p" ping >/dev/null || { echo "bench-preallocate.sh: a server on port $p did not start" >&2; exit 1; }
done
for p in "$np" "$yp" "$rp"; do
    redis-benchmark -h 127.0.0.1 -p "$p" -t set -c 50 -P 32 -d 100 -r "$keys" -n "$keys" -q >/dev/null 2>&1
done

one() {
    redis-benchmark -h 127.0.0.1 -p "$1" -t set -c 50 -P 1 -d 100 -r "$keys" -n "$requests" --csv 2>/dev/null |
        awk -F, 'NR==2 {gsub(/"/, ""); print $2}'
}
echo "durable SET -c 50 -P 1, 100-byte values, $keys keys, $requests requests a run, data under $base"
: >"$work/rounds"
for r in $(seq "$rounds"); do
    if ((r % 2)); then order="$np $yp $rp"; else order="$rp $yp $np"; fi
    declare -A res=()
    for p in $order; do res[$p]=$(one "$p"); done
    echo "$r ${res[$np]} ${res[$yp]} ${res[$rp]}" >>"$work/rounds"
done
awk 'BEGIN {printf "%5s %10s %10s %10s %8s %8s %8s\n", "round", "kvd no", "kvd yes", "redis", "no/R", "yes/R", "yes/no"}
     {printf "%5d %10.0f %10.0f %10.0f %8.2f %8.2f %8.2f\n", $1, $2, $3, $4, $2/$4, $3/$4, $3/$2
      n += $2/$4; y += $3/$4; yn += $3/$2}
     END {printf "%5s %10s %10s %10s %8.2f %8.2f %8.2f\n", "mean", "", "", "", n/NR, y/NR, yn/NR}' "$work/rounds"
for p in "$np" "$yp"; do
    name=$([ "$p" = "$np" ] && echo "kvd no " || echo "kvd yes")
    echo "$name $(redis-cli -h 127.0.0.1 -p "$p" info | tr -d '\r' | grep -E '^(fdatasync_avg_us|writes_per_group_commit):' | tr '\n' ' ')"
done
