#!/usr/bin/env bash
# Runs the same redis-benchmark workloads against kvd and against Redis
# (appendonly yes) in one run, on loopback, each in a fresh directory, and
# prints requests per second side by side with the ratio kvd/Redis.
#
#   tests/bench/compare-redis.sh [always|everysec|no]   (default: always)
#
# kvd runs with the matching --fsync policy, Redis with the matching
# appendfsync. Needs redis-server and redis-tools (installed if missing).
# Not part of the test suite: timings on a shared machine are noisy;
# compare ratios from one run, not absolute figures across runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
. ./deps.sh
kv_ensure_packages "${KV_BUILD_PACKAGES[@]}" redis-server redis-tools
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DKV_TESTS=OFF >/dev/null
cmake --build build/release -j "$(nproc)" --target kvd >/dev/null

policy=${1:-always}
n=${KV_BENCH_REQUESTS:-200000}
work=$(mktemp -d)
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

kport=$(free_port)
build/release/kv/kvd --bind 127.0.0.1 --port "$kport" --dir "$work/kvd" --fsync "$policy" --logfile "$work/kvd.log" &
pids+=($!)
rport=$(free_port)
mkdir -p "$work/redis"
redis-server --bind 127.0.0.1 --port "$rport" --dir "$work/redis" --appendonly yes --appendfsync "$policy" \
    --save '' --daemonize no --logfile "$work/redis.log" &
pids+=($!)
for p in "$kport" "$rport"; do
    for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done

run() { # port pipeline -> "SET GET" rps
    redis-benchmark -h 127.0.0.1 -p "$1" -t set,get -c 50 -d 100 -n "$n" -P "$2" --csv 2>/dev/null |
        awk -F, '/"SET"/{gsub(/"/,"",$2); s=$2} /"GET"/{gsub(/"/,"",$2); g=$2} END{print s, g}'
}
printf 'fsync %s, redis-benchmark -t set,get -c 50 -d 100 -n %s\n' "$policy" "$n"
printf '%-6s %-5s %14s %14s %8s\n' pipe cmd kvd redis ratio
for P in 1 16; do
    read -r ks kg < <(run "$kport" "$P")
    read -r rs rg < <(run "$rport" "$P")
    awk -v P="$P" -v ks="$ks" -v kg="$kg" -v rs="$rs" -v rg="$rg" 'BEGIN{
        printf "%-6s %-5s %14.0f %14.0f %8.2f\n", "-P " P, "SET", ks, rs, ks/rs;
        printf "%-6s %-5s %14.0f %14.0f %8.2f\n", "-P " P, "GET", kg, rg, kg/rg }'
done
