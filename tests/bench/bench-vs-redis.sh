#!/usr/bin/env bash
# kvd versus Redis: throughput and latency, memory, restart time and disk
# use, measured in one run on this machine. See docs/performance.md.
#
#   tests/bench/bench-vs-redis.sh [OPTIONS]
#
#   --quick            smoke run: 1/10 of the requests, one round, a 100k key
#                      space, 100k/200k/400k keys for memory and restart
#   --out DIR          where results go (default build/bench-out)
#   --modes "M..."     fsync modes for the throughput part
#                      (default "always everysec no")
#   --rounds R         rounds of every throughput workload (default 5;
#                      figures are medians over rounds)
#   --keys "N..."      key counts for memory and restart
#                      (default "1000000 2000000 4000000")
#   --restarts R       restarts timed per server and key count (default 2;
#                      the best is reported)
#   --no-throughput    skip the throughput part
#   --no-memory        skip the memory / restart part
#   --profile          also profile kvd (perf record -g) during SET -P 1
#                      under --fsync always; report in OUT/profile-*.txt
#   --kvd PATH         use this kvd binary instead of building one
#   --keep             keep the data directories (printed at the end)
#   -h, --help         this text
#
# What it does: installs what is missing (apt-get, through deps.sh, as
# ./run-kvd does), builds kvd in Release (build/bench), then
#
# 1. Throughput, for each fsync mode: kvd --fsync M against Redis
#    appendonly yes + appendfsync M, both on 127.0.0.1, free ports, fresh
#    directories, each preloaded with the key space (1,000,000 keys
#    key:000000000000.., 100-byte values) so GETs hit. The same
#    redis-benchmark workloads (-c 50, -r KEYSPACE) run against both,
#    alternating per workload (kvd, Redis; next round Redis, kvd):
#      SET -d 100 -P 1 | GET -P 1 | SET -P 16 | GET -P 16 |
#      90/10 GET/SET: a GET and a SET redis-benchmark at once, 45 and 5
#      clients, 9:1 requests; combined ops/s = all requests / wall time |
#      SET -d 16384 -P 1.
# 2. Memory and restart, for each key count N: load exactly N distinct keys
#    (16-byte keys, 100-byte values; generated RESP through redis-cli
#    --pipe) into kvd (--fsync always) and Redis (appendfsync always,
#    auto-rewrite off while loading); VmRSS; bytes on disk; restart each
#    (clean SIGTERM, then time from exec to the first +PONG, polled every
#    10 ms); then BGREWRITEAOF on Redis and time its restart again.
#
# Output in OUT: results.md (tables with ratios kvd/Redis), throughput.csv,
# memory.csv (summaries), throughput-raw.csv, memory-raw.csv (every run),
# performance.png (gnuplot), env.txt (machine, versions, commit),
# info-*.txt (INFO of both servers after each mode), raw/ (every
# redis-benchmark output and server log).
#
# Every server runs on 127.0.0.1 and is stopped at exit (trap). The full
# run takes about 20 minutes on a 2-core VM; --quick about 2.
# Not part of the test suite: timings on a shared machine are noisy;
# compare ratios from one run, not absolute figures across runs.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
helper="$root/tests/bench/bench_helper.py"

quick=0 out="$root/build/bench-out" modes="always everysec no" rounds=5
keys_list="1000000 2000000 4000000" restarts=2 do_tp=1 do_mem=1 profile=0 kvd_bin="" keep=0
rounds_set=0 keys_set=0
while (($#)); do
    case "$1" in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --out=*) out=${1#*=} ;;
    --modes) modes=$2; shift ;;
    --rounds) rounds=$2; rounds_set=1; shift ;;
    --keys) keys_list=$2; keys_set=1; shift ;;
    --restarts) restarts=$2; shift ;;
    --no-throughput) do_tp=0 ;;
    --no-memory) do_mem=0 ;;
    --profile) profile=1 ;;
    --kvd) kvd_bin=$2; shift ;;
    --keep) keep=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench-vs-redis.sh: unknown option '$1' (--help lists them)" >&2; exit 2 ;;
    esac
    shift
done

# Sizes. Full: each redis-benchmark run lasts a few seconds on a 2-core VM.
keyspace=1000000 n_p1=300000 n_p16=2000000 n_mixed=500000 n_16k=30000
if ((quick)); then
    keyspace=100000 n_p1=30000 n_p16=200000 n_mixed=50000 n_16k=3000
    ((rounds_set)) || rounds=1
    ((keys_set)) || keys_list="100000 200000 400000"
fi

. ./deps.sh
pkgs=("${KV_BUILD_PACKAGES[@]}" redis-server redis-tools gnuplot-nox python3 procps)
((profile)) && pkgs+=(linux-perf)
kv_ensure_packages "${pkgs[@]}"
py=/usr/bin/python3

built=given
if [ -z "$kvd_bin" ]; then
    built="built by this script from the working tree"
    echo "building kvd (Release) in build/bench" >&2
    cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DKV_TESTS=OFF >/dev/null
    cmake --build build/bench -j "$(nproc)" --target kvd >/dev/null
    kvd_bin="$root/build/bench/kv/kvd"
fi
kvd_bin=$(realpath "$kvd_bin")

mkdir -p "$out"
out=$(realpath "$out")
rm -rf "$out/raw"
rm -f "$out"/throughput*.csv "$out"/memory*.csv "$out"/results.md "$out"/performance.png "$out"/plot* \
    "$out"/info-*.txt "$out"/profile-*.txt "$out"/background.csv
mkdir -p "$out/raw"
work=$(mktemp -d "${TMPDIR:-/tmp}/kvd-vs-redis.XXXXXX")

declare -A live=() # pid -> name, every server still running
cleanup() {
    local p
    for p in "${!live[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${!live[@]}"; do wait "$p" 2>/dev/null || true; done
    if ((keep)); then echo "data directories kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
free_port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
now_ns() { date +%s%N; }

# start_kvd DIR FSYNC PORT: sets $spid. start_redis DIR FSYNC PORT [redis options...].
start_kvd() { # DIR FSYNC PORT [extra kvd options...]
    local dir=$1 fsync=$2 port=$3
    shift 3
    "$kvd_bin" --bind 127.0.0.1 --port "$port" --dir "$dir" --fsync "$fsync" --logfile "$dir.log" "$@" &
    spid=$!
    live[$spid]=kvd
}
start_redis() {
    local dir=$1 fsync=$2 port=$3
    shift 3
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --appendonly yes --appendfsync "$fsync" \
        --save '' --daemonize no --logfile "$dir.log" "$@" &
    spid=$!
    live[$spid]=redis
}
# ready PORT T0_NS: waits for +PONG, prints ms since T0_NS.
ready() {
    $py "$helper" ready "$1" "$2" 600 || { echo "server on port $1 did not answer PING" >&2; exit 1; }
}
stop_server() { # PID: clean shutdown (SIGTERM), waits for the exit
    kill -TERM "$1"
    wait "$1" || true
    unset "live[$1]"
}
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
disk_bytes() { du -sb "$1" | cut -f1; }
# load PORT N: N distinct keys through redis-cli --pipe; prints seconds.
load() {
    local t0 t1 res
    t0=$(now_ns)
    res=$($py "$helper" gen "$2" 100 | redis-cli -h 127.0.0.1 -p "$1" --pipe 2>&1 | tail -1)
    t1=$(now_ns)
    case "$res" in
    *"errors: 0, replies: $2"*) ;;
    *) echo "loading $2 keys into port $1 failed: $res" >&2; exit 1 ;;
    esac
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f\n", (b-a)/1e9}'
}
# Waits until Redis on PORT has no AOF rewrite running or scheduled.
redis_rewrite_wait() {
    local i
    for i in $(seq 6000); do
        redis-cli -p "$1" info persistence | tr -d '\r' |
            grep -q -E '^aof_rewrite_in_progress:1|^aof_rewrite_scheduled:1' || return 0
        sleep 0.1
    done
    echo "Redis AOF rewrite did not finish" >&2
    exit 1
}

{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "cpu: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
    echo "kvd: $("$kvd_bin" --version) ($kvd_bin, ${built/given/given with --kvd: the commit below is the working tree\'s, not necessarily the binary\'s})"
    echo "working tree: commit $(git rev-parse HEAD 2>/dev/null || echo unknown)," \
        "$(git status --short kv recovery 2>/dev/null | wc -l) uncommitted files under kv/ recovery/"
    echo "redis-server: $(redis-server --version)"
    echo "redis-benchmark: $(redis-benchmark --version)"
    echo "data directories under: $work ($(df -T "$work" | awk 'NR==2{print $2, $1}'))"
    echo "quick: $quick; rounds: $rounds; key space: $keyspace; requests: P1 $n_p1, P16 $n_p16, mixed $n_mixed, 16KiB $n_16k"
} >"$out/env.txt"
cat "$out/env.txt" >&2

# ---------------------------------------------------------------- throughput
port_of_kvd=0 port_of_redis=0
# bench SERVER FILE redis-benchmark-args...: runs, keeps the CSV output.
bench() {
    local srv=$1 file=$2 port
    shift 2
    if [ "$srv" = kvd ]; then port=$port_of_kvd; else port=$port_of_redis; fi
    redis-benchmark -h 127.0.0.1 -p "$port" -r "$keyspace" --csv "$@" >"$file" 2>/dev/null
}
# record MODE WORKLOAD SERVER ROUND FILE TEST
record() {
    local row
    row=$($py "$helper" csv-row "$5" "$6") || { echo "no $6 result in $5" >&2; exit 1; }
    echo "$1,$2,$3,$4,$row" >>"$out/throughput-raw.csv"
}
run_workload() { # MODE WORKLOAD SERVER ROUND
    local mode=$1 wl=$2 srv=$3 r=$4 f="$out/raw/$1-$2-$3-r$4" t0 t1 gp sp ng ns
    case "$wl" in
    set-P1) bench "$srv" "$f.csv" -t set -c 50 -d 100 -P 1 -n "$n_p1"; record "$@" "$f.csv" SET ;;
    get-P1) bench "$srv" "$f.csv" -t get -c 50 -d 100 -P 1 -n "$n_p1"; record "$@" "$f.csv" GET ;;
    set-P16) bench "$srv" "$f.csv" -t set -c 50 -d 100 -P 16 -n "$n_p16"; record "$@" "$f.csv" SET ;;
    get-P16) bench "$srv" "$f.csv" -t get -c 50 -d 100 -P 16 -n "$n_p16"; record "$@" "$f.csv" GET ;;
    set16k-P1) bench "$srv" "$f.csv" -t set -c 50 -d 16384 -P 1 -n "$n_16k"; record "$@" "$f.csv" SET ;;
    mixed)
        ng=$((n_mixed * 9 / 10)) ns=$((n_mixed / 10))
        t0=$(now_ns)
        bench "$srv" "$f-get.csv" -t get -c 45 -d 100 -P 1 -n "$ng" &
        gp=$!
        bench "$srv" "$f-set.csv" -t set -c 5 -d 100 -P 1 -n "$ns" &
        sp=$!
        wait "$gp"
        wait "$sp"
        t1=$(now_ns)
        record "$mode" mixed-get "$srv" "$r" "$f-get.csv" GET
        record "$mode" mixed-set "$srv" "$r" "$f-set.csv" SET
        echo "$mode,mixed-total,$srv,$r,$(awk -v n="$((ng + ns))" -v a="$t0" -v b="$t1" \
            'BEGIN{printf "%.2f", n/((b-a)/1e9)}'),,,,,," >>"$out/throughput-raw.csv"
        ;;
    esac
}

# profile_run KVD_PID REDIS_PID (fsync always): where the time goes.
# 1. perf stat on each server during SET -P 1 and GET -P 1: CPU time,
#    context switches and system calls per request (OUT/profile-cost.txt).
# 2. perf record (DWARF call graphs) on kvd during SET -P 1: the
#    hottest symbols, self and inclusive, and the split by thread
#    (OUT/profile-set-P1-*.txt); kvd's INFO before and after (group
#    commits, fdatasyncs).
profile_run() {
    local kpid=$1 rpid=$2 srv pid t wl ppid f
    {
        echo "# perf stat per server during redis-benchmark -c 50 -d 100 -P 1 -n $n_p1 (fsync always)"
        echo "# workload server ops_s cpu_us_per_req ctx_switches_per_req syscalls_per_req"
    } >"$out/profile-cost.txt"
    for wl in set get; do
        for srv in kvd redis; do
            if [ "$srv" = kvd ]; then pid=$kpid; else pid=$rpid; fi
            f="$out/raw/perfstat-$wl-$srv.txt"
            perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -o "$f" -p "$pid" &
            ppid=$!
            sleep 0.5
            bench "$srv" "$out/raw/perfstat-$wl-$srv.csv" -t "$wl" -c 50 -d 100 -P 1 -n "$n_p1"
            kill -INT "$ppid"
            wait "$ppid" || true
            t=$($py "$helper" csv-row "$out/raw/perfstat-$wl-$srv.csv" "${wl^^}" | cut -d, -f1)
            awk -F, -v n="$n_p1" -v wl="${wl^^}" -v srv="$srv" -v rps="$t" '
                $3=="task-clock"{cpu=$1} $3=="context-switches"{cs=$1} $3 ~ /sys_enter/{sc=$1}
                END{printf "%s %s %.0f %.2f %.2f %.2f\n", wl, srv, rps, cpu*1000/n, cs/n, sc/n}' "$f" \
                >>"$out/profile-cost.txt"
        done
    done
    log "  perf stat: $(tail -n +3 "$out/profile-cost.txt" | tr '\n' ';')"
    log "  profiling kvd during SET -P 1 (perf record, DWARF call graphs)"
    redis-cli -p "$port_of_kvd" info >"$out/profile-set-P1-info-before.txt"
    perf record --call-graph dwarf,16384 -F 999 -o "$out/raw/perf-set-P1.data" -p "$kpid" >/dev/null 2>&1 &
    ppid=$!
    sleep 1
    bench kvd "$out/raw/profile-set-P1.csv" -t set -c 50 -d 100 -P 1 -n "$n_p1"
    kill -INT "$ppid"
    wait "$ppid" || true
    redis-cli -p "$port_of_kvd" info >"$out/profile-set-P1-info-after.txt"
    f="$out/raw/perf-set-P1.data"
    perf report -i "$f" --stdio --no-children --sort dso,symbol --percent-limit 0.5 -g none \
        2>/dev/null >"$out/profile-set-P1-self.txt" || true
    perf report -i "$f" --stdio --children --sort symbol --percent-limit 2 -g none \
        2>/dev/null >"$out/profile-set-P1-children.txt" || true
    perf report -i "$f" --stdio --no-children --sort pid -g none \
        2>/dev/null >"$out/profile-set-P1-threads.txt" || true
    perf report -i "$f" --stdio --no-children --sort pid,dso,symbol --percent-limit 0.5 -g none \
        2>/dev/null >"$out/profile-set-P1-by-thread.txt" || true
}

if ((do_tp)); then
    echo "mode,workload,server,round,rps,avg,min,p50,p95,p99,max" >"$out/throughput-raw.csv"
    echo "mode,kvd_compactions,redis_aof_rewrites,kvd_log_bytes,redis_dir_bytes" >"$out/background.csv"
    workloads=(set-P1 get-P1 set-P16 get-P16 mixed set16k-P1)
    for mode in $modes; do
        d="$work/tp-$mode"
        mkdir -p "$d"
        port_of_kvd=$(free_port)
        start_kvd "$d/kvd" "$mode" "$port_of_kvd"
        kpid=$spid
        port_of_redis=$(free_port)
        start_redis "$d/redis" "$mode" "$port_of_redis"
        rpid=$spid
        ready "$port_of_kvd" "$(now_ns)" >/dev/null
        ready "$port_of_redis" "$(now_ns)" >/dev/null
        log "fsync $mode: kvd pid $kpid port $port_of_kvd, Redis pid $rpid port $port_of_redis; preloading $keyspace keys"
        kl=$(load "$port_of_kvd" "$keyspace")
        rl=$(load "$port_of_redis" "$keyspace")
        log "  kvd loaded in $kl s, Redis in $rl s"
        redis_rewrite_wait "$port_of_redis"
        for r in $(seq "$rounds"); do
            for wl in "${workloads[@]}"; do
                if ((r % 2)); then order=(kvd redis); else order=(redis kvd); fi
                for srv in "${order[@]}"; do
                    run_workload "$mode" "$wl" "$srv" "$r"
                done
                log "  round $r $wl: $(grep -E "^$mode,$wl[-a-z]*,[a-z]+,$r," "$out/throughput-raw.csv" |
                    awk -F, '{printf "%s %s %.0f/s  ", $2, $3, $5}')"
            done
        done
        if ((profile)) && [ "$mode" = always ]; then profile_run "$kpid" "$rpid"; fi
        redis-cli -p "$port_of_kvd" info >"$out/info-$mode-kvd.txt" 2>&1 || true
        redis-cli -p "$port_of_redis" info >"$out/info-$mode-redis.txt" 2>&1 || true
        # Background work during the part: kvd compactions, Redis AOF rewrites.
        echo "$mode,$(tr -d '\r' <"$out/info-$mode-kvd.txt" | awk -F: '$1=="compactions"{print $2}')," \
            "$(tr -d '\r' <"$out/info-$mode-redis.txt" | awk -F: '$1=="aof_rewrites"{print $2}')," \
            "$(tr -d '\r' <"$out/info-$mode-kvd.txt" | awk -F: '$1=="log_bytes"{print $2}')," \
            "$(du -sb "$d/redis" | cut -f1)" | tr -d ' ' >>"$out/background.csv"
        stop_server "$kpid"
        stop_server "$rpid"
        cp "$d/kvd.log" "$out/raw/$mode-kvd.log"
        cp "$d/redis.log" "$out/raw/$mode-redis.log"
        ((keep)) || rm -rf "$d"
    done
fi

# ------------------------------------------------------- memory and restart
if ((do_mem)); then
    echo "keys,server,restart,load_s,rss_after_load_kib,rss_after_restart_kib,ready_ms,disk_bytes" >"$out/memory-raw.csv"
    for n in $keys_list; do
        d="$work/mem-$n"
        mkdir -p "$d"
        kp=$(free_port)
        rp=$(free_port)
        start_kvd "$d/kvd" always "$kp"
        kpid=$spid
        start_redis "$d/redis" always "$rp" --auto-aof-rewrite-percentage 0
        rpid=$spid
        ready "$kp" "$(now_ns)" >/dev/null
        ready "$rp" "$(now_ns)" >/dev/null
        log "memory: loading $n keys"
        kload=$(load "$kp" "$n")
        rload=$(load "$rp" "$n")
        sleep 1
        krss=$(rss_kib "$kpid")
        rrss=$(rss_kib "$rpid")
        # kvd writes the hint files of sealed segments in the background:
        # let it finish, so the timed restarts find them all.
        for _ in $(seq 600); do
            [ "$(redis-cli -p "$kp" info persistence | tr -d '\r' | awk -F: '$1=="hint_files_pending"{print $2}')" = 0 ] && break
            sleep 0.1
        done
        stop_server "$kpid"
        stop_server "$rpid"
        kdisk=$(disk_bytes "$d/kvd")
        rdisk=$(disk_bytes "$d/redis")
        log "  loaded: kvd ${kload}s RSS ${krss} KiB disk $kdisk B; Redis ${rload}s RSS ${rrss} KiB disk $rdisk B"
        for i in $(seq "$restarts"); do
            t0=$(now_ns)
            start_kvd "$d/kvd" always "$kp"
            ms=$(ready "$kp" "$t0")
            rss=$(rss_kib "$spid")
            stop_server "$spid"
            echo "$n,kvd,$i,$kload,$krss,$rss,$ms,$kdisk" >>"$out/memory-raw.csv"
            log "  restart $i: kvd (hint files) ready in $ms ms, RSS $rss KiB"
            t0=$(now_ns)
            start_kvd "$d/kvd" always "$kp" --hint-files no
            ms=$(ready "$kp" "$t0")
            rss=$(rss_kib "$spid")
            stop_server "$spid"
            echo "$n,kvd-no-hints,$i,$kload,$krss,$rss,$ms,$kdisk" >>"$out/memory-raw.csv"
            log "  restart $i: kvd (--hint-files no: reads every record) ready in $ms ms, RSS $rss KiB"
            t0=$(now_ns)
            start_redis "$d/redis" always "$rp" --auto-aof-rewrite-percentage 0
            ms=$(ready "$rp" "$t0")
            rss=$(rss_kib "$spid")
            stop_server "$spid"
            echo "$n,redis-aof,$i,$rload,$rrss,$rss,$ms,$rdisk" >>"$out/memory-raw.csv"
            log "  restart $i: Redis (AOF as written) ready in $ms ms, RSS $rss KiB"
        done
        # Redis's steady state: the AOF rewritten (base in RDB format).
        start_redis "$d/redis" always "$rp" --auto-aof-rewrite-percentage 0
        ready "$rp" "$(now_ns)" >/dev/null
        redis-cli -p "$rp" bgrewriteaof >/dev/null
        sleep 0.2
        redis_rewrite_wait "$rp"
        stop_server "$spid"
        rwdisk=$(disk_bytes "$d/redis")
        for i in $(seq "$restarts"); do
            t0=$(now_ns)
            start_redis "$d/redis" always "$rp" --auto-aof-rewrite-percentage 0
            ms=$(ready "$rp" "$t0")
            rss=$(rss_kib "$spid")
            stop_server "$spid"
            echo "$n,redis-rewritten,$i,$rload,$rrss,$rss,$ms,$rwdisk" >>"$out/memory-raw.csv"
            log "  restart $i: Redis (rewritten AOF, $rwdisk B) ready in $ms ms, RSS $rss KiB"
        done
        ls -l "$d/kvd" "$d/redis/appendonlydir" >"$out/raw/mem-$n-files.txt"
        cp "$d/kvd.log" "$out/raw/mem-$n-kvd.log"
        cp "$d/redis.log" "$out/raw/mem-$n-redis.log"
        ((keep)) || rm -rf "$d"
    done
fi

# ------------------------------------------------------------------- report
$py "$helper" report "$out"
if [ -f "$out/plot.gp" ]; then gnuplot "$out/plot.gp"; fi
cat "$out/results.md"
log "results in $out (results.md, *.csv, performance.png)"
