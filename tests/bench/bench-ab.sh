#!/usr/bin/env bash
# Two kvd binaries against each other, with Redis beside both: runs
# bench-vs-redis.sh alternately with binary A and binary B (A, B, then
# B, A, ...), one round each, and reports per workload the median kvd
# ops/s and p99 of A and of B, the B/A ratio, and each one's kvd/Redis
# ratio from the same run (Redis is measured beside each binary, so a
# machine that slows down during the run shows in both); and, when the
# runs measure memory and restarts, RSS after the load and the time to
# ready after a restart of A and B.
#
#   tests/bench/bench-ab.sh --a PATH --b PATH [--runs N] [--out DIR]
#                           [-- extra options for bench-vs-redis.sh]
#
#   --a PATH     the first kvd binary (e.g. a build of the commit before)
#   --b PATH     the second kvd binary (e.g. a build of the working tree)
#   --runs N     runs per binary (default 3)
#   --out DIR    where results go (default build/bench-ab); one
#                bench-vs-redis.sh output per run in DIR/a-1, DIR/b-1, ...
#                and the comparison in DIR/ab.md and DIR/ab.csv
#   Options after -- go to every bench-vs-redis.sh run; the default is
#   "--no-memory --modes always" (throughput and latency, fsync always);
#   e.g. -- --modes always --keys 1000000 adds memory and restart time.
#
# Build the two binaries as bench-vs-redis.sh builds its own:
#   cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DKV_TESTS=OFF
#   cmake --build build/bench --target kvd
set -euo pipefail
cd "$(dirname "$0")/../.."

a="" b="" runs=3 out=build/bench-ab
extra=()
while (($#)); do
    case "$1" in
    --a) a=$2; shift 2 ;;
    --b) b=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-ab.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$a" ] || [ -z "$b" ]; then
    echo "bench-ab.sh: --a and --b are both required (see --help)" >&2
    exit 2
fi
for bin in "$a" "$b"; do
    [ -x "$bin" ] || { echo "bench-ab.sh: $bin is not an executable" >&2; exit 2; }
done
case "$runs" in '' | *[!0-9]* | 0) echo "bench-ab.sh: --runs must be a positive integer" >&2; exit 2 ;; esac
((${#extra[@]})) || extra=(--no-memory --modes always)
a=$(realpath "$a")
b=$(realpath "$b")
mkdir -p "$out"
out=$(realpath "$out")

for ((i = 1; i <= runs; i++)); do
    if ((i % 2)); then order=(a b); else order=(b a); fi
    for which in "${order[@]}"; do
        bin=$a
        [ "$which" = b ] && bin=$b
        echo "run $i/$runs: $which ($bin)" >&2
        tests/bench/bench-vs-redis.sh --kvd "$bin" --rounds 1 --out "$out/$which-$i" "${extra[@]}" >/dev/null
    done
done

/usr/bin/python3 - "$out" "$runs" "$a" "$b" <<'EOF'
import csv, os, statistics, sys
out, runs, a, b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = {}  # (mode, workload) -> {which: [row, ...]}
for which in ("a", "b"):
    for i in range(1, runs + 1):
        pth = os.path.join(out, "%s-%d" % (which, i), "throughput.csv")
        if not os.path.exists(pth):  # --no-throughput
            continue
        with open(pth, newline="") as fh:
            for r in csv.DictReader(fh):
                rows.setdefault((r["fsync"], r["workload"]), {}).setdefault(which, []).append(r)

def med(rs, k):
    xs = [float(r[k]) for r in rs if r.get(k)]
    return statistics.median(xs) if xs else None

def f(x, nd=0):
    return "-" if x is None else "{:,.{}f}".format(x, nd)

md = ["# kvd A against kvd B, Redis beside each", "",
      "A: `%s`  " % a, "B: `%s`  " % b,
      "%d runs per binary, alternating; medians over runs." % runs, "",
      "| fsync | workload | A ops/s | B ops/s | B/A | A/Redis | B/Redis | A p99 ms | B p99 ms |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
with open(os.path.join(out, "ab.csv"), "w", newline="") as fcsv:
    w = csv.writer(fcsv)
    w.writerow(["fsync", "workload", "a_ops_s", "b_ops_s", "b_over_a", "a_over_redis", "b_over_redis",
                "a_p99_ms", "b_p99_ms"])
    for (mode, wl), d in rows.items():
        ra, rb = d.get("a", []), d.get("b", [])
        va, vb = med(ra, "kvd_ops_s"), med(rb, "kvd_ops_s")
        ba = vb / va if va and vb else None
        qa, qb = med(ra, "ops_ratio"), med(rb, "ops_ratio")
        pa, pb = med(ra, "kvd_p99_ms"), med(rb, "kvd_p99_ms")
        w.writerow([mode, wl, f(va), f(vb), f(ba, 3), f(qa, 3), f(qb, 3), f(pa, 3), f(pb, 3)])
        md.append("| %s | %s | %s | %s | **%s** | %s | %s | %s | %s |" %
                  (mode, wl, f(va), f(vb), f(ba, 3), f(qa, 2), f(qb, 2), f(pa, 3), f(pb, 3)))
mem = {}  # (keys, server) -> {which: [row, ...]}
for which in ("a", "b"):
    for i in range(1, runs + 1):
        pth = os.path.join(out, "%s-%d" % (which, i), "memory.csv")
        if not os.path.exists(pth):
            continue
        with open(pth, newline="") as fh:
            for r in csv.DictReader(fh):
                mem.setdefault((r["keys"], r["server"]), {}).setdefault(which, []).append(r)
if mem:
    md += ["", "| keys | server | A RSS KiB | B RSS KiB | B/A | A ready ms | B ready ms | B/A |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (n, srv), d in sorted(mem.items(), key=lambda x: (int(x[0][0]), x[0][1])):
        ra, rb = d.get("a", []), d.get("b", [])
        ma, mb = med(ra, "rss_after_load_kib"), med(rb, "rss_after_load_kib")
        ya, yb = med(ra, "ready_ms_best"), med(rb, "ready_ms_best")
        md.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            n, srv, f(ma), f(mb), f(mb / ma if ma and mb else None, 3), f(ya, 1), f(yb, 1),
            f(yb / ya if ya and yb else None, 3)))
text = "\n".join(md) + "\n"
with open(os.path.join(out, "ab.md"), "w") as fmd:
    fmd.write(text)
print(text)
EOF
