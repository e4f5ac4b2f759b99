#!/usr/bin/python3
"""Helpers for tests/bench/bench-vs-redis.sh (Debian's /usr/bin/python3, no
third-party modules).

  bench_helper.py gen N [VALUE_BYTES]
      Writes N distinct SET commands as RESP to stdout, for `redis-cli
      --pipe`: keys key:000000000000 .. key:%012d (16 bytes, the keys
      redis-benchmark -r uses), values of VALUE_BYTES (default 100)
      pseudo-random hex digits (so neither server nor Redis's RDB
      compression gets an easy ride from repeated bytes).

  bench_helper.py ready PORT T0_NS TIMEOUT_S
      Polls 127.0.0.1:PORT every 10 ms with PING until the reply is +PONG
      (Redis answers -LOADING while it loads its AOF: that does not count),
      then prints the milliseconds since T0_NS (time.time_ns() clock, as
      `date +%s%N`). Exit 1 on timeout.

  bench_helper.py csv-row FILE TEST
      Prints "rps,avg,min,p50,p95,p99,max" of TEST from a redis-benchmark
      --csv output file.

  bench_helper.py report OUTDIR
      Reads OUTDIR/throughput-raw.csv and OUTDIR/memory-raw.csv, writes
      OUTDIR/throughput.csv, OUTDIR/memory.csv (medians, ratios),
      OUTDIR/results.md (Markdown tables) and the gnuplot inputs
      OUTDIR/plot-*.dat and OUTDIR/plot.gp.
"""
import csv
import os
import socket
import statistics
import sys
import time


def gen(n, vbytes):
    out = sys.stdout.buffer
    head = b"*3\r\n$3\r\nSET\r\n$16\r\n"
    vhead = b"\r\n$%d\r\n" % vbytes
    chunk = 20000
    half = (vbytes + 1) // 2
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        rnd = os.urandom(half * (end - start)).hex().encode()
        parts = []
        for i in range(start, end):
            o = (i - start) * half * 2
            parts.append(head + b"key:%012d" % i + vhead + rnd[o:o + vbytes] + b"\r\n")
        out.write(b"".join(parts))
    out.flush()


def ready(port, t0_ns, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"PING\r\n")
                reply = b""
                while not reply.endswith(b"\r\n"):
                    b = s.recv(256)
                    if not b:
                        break
                    reply += b
                if reply.startswith(b"+PONG"):
                    print("%.1f" % ((time.time_ns() - t0_ns) / 1e6))
                    return 0
        except OSError:
            pass
        time.sleep(0.01)
    return 1


def csv_row(path, test):
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["test"] == test:
                keys = ["rps", "avg_latency_ms", "min_latency_ms", "p50_latency_ms",
                        "p95_latency_ms", "p99_latency_ms", "max_latency_ms"]
                print(",".join(row[k] for k in keys))
                return 0
    return 1


WORKLOADS = [  # (id, label)
    ("set-P1", "SET 100 B, -P 1"),
    ("get-P1", "GET 100 B, -P 1"),
    ("set-P16", "SET 100 B, -P 16"),
    ("get-P16", "GET 100 B, -P 16"),
    ("mixed-total", "90/10 GET/SET, combined"),
    ("mixed-get", "90/10: GET part (45 clients)"),
    ("mixed-set", "90/10: SET part (5 clients)"),
    ("set16k-P1", "SET 16 KiB, -P 1"),
]


def fnum(s):
    return float(s) if s not in ("", None) else None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}" if nd == 0 else f"{x:.{nd}f}"


def report(outdir):
    md = []
    tp_raw = os.path.join(outdir, "throughput-raw.csv")
    modes = []
    if os.path.exists(tp_raw):
        data = {}  # (mode, wl, server) -> list of dict
        with open(tp_raw, newline="") as f:
            for r in csv.DictReader(f):
                if r["mode"] not in modes:
                    modes.append(r["mode"])
                data.setdefault((r["mode"], r["workload"], r["server"]), []).append(r)
        rows = []
        for mode in modes:
            for wl, label in WORKLOADS:
                k = data.get((mode, wl, "kvd"), [])
                rd = data.get((mode, wl, "redis"), [])
                if not k and not rd:
                    continue
                v = {}
                for name, rs in (("kvd", k), ("redis", rd)):
                    for fld in ("rps", "p50", "p99"):
                        v[name + "_" + fld] = med([fnum(x[fld]) for x in rs])
                v["rounds"] = max(len(k), len(rd))
                rows.append((mode, wl, label, v))
        with open(os.path.join(outdir, "throughput.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["fsync", "workload", "rounds", "kvd_ops_s", "redis_ops_s", "ops_ratio",
                        "kvd_p50_ms", "redis_p50_ms", "p50_ratio", "kvd_p99_ms", "redis_p99_ms", "p99_ratio"])
            for mode, wl, label, v in rows:
                def g(x, nd):
                    return "" if x is None else f"{x:.{nd}f}"
                w.writerow([mode, wl, v["rounds"],
                            g(v["kvd_rps"], 0), g(v["redis_rps"], 0), g(ratio(v["kvd_rps"], v["redis_rps"]), 3),
                            g(v["kvd_p50"], 3), g(v["redis_p50"], 3), g(ratio(v["kvd_p50"], v["redis_p50"]), 3),
                            g(v["kvd_p99"], 3), g(v["redis_p99"], 3), g(ratio(v["kvd_p99"], v["redis_p99"]), 3)])
        md.append("## Throughput and latency\n")
        md.append("Median over rounds; ratio = kvd / Redis (ops/s: higher is better for kvd; "
                  "latency: lower is better for kvd). Latencies in ms, from redis-benchmark.\n")
        for mode in modes:
            md.append(f"\n### fsync {mode} (kvd `--fsync {mode}`, Redis `appendonly yes`, `appendfsync {mode}`)\n")
            md.append("| workload | kvd ops/s | Redis ops/s | ratio | kvd p50 | Redis p50 | ratio | kvd p99 | Redis p99 | ratio |")
            md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for m, wl, label, v in rows:
                if m != mode:
                    continue
                md.append("| %s | %s | %s | **%s** | %s | %s | %s | %s | %s | %s |" % (
                    label, fmt(v["kvd_rps"]), fmt(v["redis_rps"]), fmt(ratio(v["kvd_rps"], v["redis_rps"]), 2),
                    fmt(v["kvd_p50"], 3), fmt(v["redis_p50"], 3), fmt(ratio(v["kvd_p50"], v["redis_p50"]), 2),
                    fmt(v["kvd_p99"], 3), fmt(v["redis_p99"], 3), fmt(ratio(v["kvd_p99"], v["redis_p99"]), 2)))
        bg = os.path.join(outdir, "background.csv")
        if os.path.exists(bg):
            md.append("\nBackground work during the throughput part (the servers' defaults): kvd compactions "
                      "(auto-compaction by dead-byte share), Redis AOF rewrites (auto-aof-rewrite, a fork each); "
                      "log / AOF directory bytes at the end.\n")
            md.append("| fsync | kvd compactions | Redis AOF rewrites | kvd log MiB | Redis dir MiB |")
            md.append("|---|---:|---:|---:|---:|")
            with open(bg, newline="") as f:
                for r in csv.DictReader(f):
                    md.append("| %s | %s | %s | %s | %s |" % (
                        r["mode"], r["kvd_compactions"] or "–", r["redis_aof_rewrites"] or "–",
                        fmt(fnum(r["kvd_log_bytes"]) / 1048576 if fnum(r["kvd_log_bytes"]) else None),
                        fmt(fnum(r["redis_dir_bytes"]) / 1048576 if fnum(r["redis_dir_bytes"]) else None)))
        # gnuplot data: one line per (mode, workload) with kvd and Redis ops/s
        with open(os.path.join(outdir, "plot-throughput.dat"), "w") as f:
            f.write("# label kvd_ops_s redis_ops_s\n")
            for mode, wl, label, v in rows:
                if wl in ("mixed-get", "mixed-set"):
                    continue
                short = {"set-P1": "SET P1", "get-P1": "GET P1", "set-P16": "SET P16", "get-P16": "GET P16",
                         "mixed-total": "90/10 mix", "set16k-P1": "SET 16K"}[wl]
                f.write('"%s\\n%s" %s %s\n' % (short, mode, v["kvd_rps"] or 0, v["redis_rps"] or 0))

    mem_raw = os.path.join(outdir, "memory-raw.csv")
    mrows = []
    if os.path.exists(mem_raw):
        data = {}
        order = []
        with open(mem_raw, newline="") as f:
            for r in csv.DictReader(f):
                k = (int(r["keys"]), r["server"])
                if k not in data:
                    order.append(k)
                data.setdefault(k, []).append(r)
        keys = sorted({k for k, _ in order})
        with open(os.path.join(outdir, "memory.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["keys", "server", "load_s", "rss_after_load_kib", "rss_after_restart_kib",
                        "ready_ms_best", "ready_ms_all", "disk_bytes", "rss_bytes_per_key", "ready_us_per_key"])
            for n in keys:
                for srv in ("kvd", "kvd-no-hints", "redis-aof", "redis-rewritten"):
                    rs = data.get((n, srv))
                    if not rs:
                        continue
                    r = rs[0]
                    readies = [fnum(x["ready_ms"]) for x in rs]
                    best = min(x for x in readies if x is not None) if any(x is not None for x in readies) else None
                    rss_l = fnum(r["rss_after_load_kib"])
                    rss_r = med([fnum(x["rss_after_restart_kib"]) for x in rs])
                    rec = dict(keys=n, server=srv, load_s=fnum(r["load_s"]), rss_l=rss_l, rss_r=rss_r, ready=best,
                               readies=readies, disk=fnum(r["disk_bytes"]))
                    mrows.append(rec)
                    w.writerow([n, srv, r["load_s"], r["rss_after_load_kib"], "" if rss_r is None else int(rss_r),
                                "" if best is None else best, " ".join("%.1f" % x for x in readies if x is not None),
                                r["disk_bytes"],
                                "" if rss_l is None else "%.1f" % (rss_l * 1024 / n),
                                "" if best is None else "%.3f" % (best * 1000 / n)])

        def get(n, srv):
            for m in mrows:
                if m["keys"] == n and m["server"] == srv:
                    return m
            return None

        md.append("\n## Memory, restart and disk\n")
        md.append("16-byte keys, 100-byte values, loaded with `redis-cli --pipe` (fsync always on both). "
                  "RSS is VmRSS from /proc/PID/status. *Ready* is the time from starting the process "
                  "to the first +PONG (polled every 10 ms), best of the restarts. "
                  "`redis-aof`: Redis replaying the AOF as written (auto-rewrite off during the load: one SET "
                  "command per key); `redis-rewritten`: Redis after BGREWRITEAOF (base in RDB format, "
                  "Redis's steady state with its default auto-rewrite). `kvd`: kvd with its hint files (sealed "
                  "segments loaded from them, the newest segment read); `kvd-no-hints`: kvd started with "
                  "`--hint-files no`, reading and CRC-checking the whole log. Both kvd rows load the same "
                  "directory, so their load and RSS-after-load figures are the same run.\n")
        md.append("| keys | server | load s | RSS after load MiB | RSS after restart MiB | ready ms | disk MiB | RSS B/key | ready µs/key |")
        md.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for m in mrows:
            n = m["keys"]
            md.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                f"{n:,}", m["server"], fmt(m["load_s"], 1),
                fmt(m["rss_l"] / 1024 if m["rss_l"] else None, 0), fmt(m["rss_r"] / 1024 if m["rss_r"] else None, 0),
                fmt(m["ready"], 0), fmt(m["disk"] / 1048576 if m["disk"] else None, 0),
                fmt(m["rss_l"] * 1024 / n if m["rss_l"] else None, 0),
                fmt(m["ready"] * 1000 / n if m["ready"] else None, 2)))
        md.append("\n### Ratios kvd / Redis\n")
        md.append("| keys | RSS after load | RSS after restart | ready vs redis-aof | ready vs redis-rewritten | ready without hints vs redis-aof | disk vs redis-aof | disk vs redis-rewritten |")
        md.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in keys:
            k, ra, rw = get(n, "kvd"), get(n, "redis-aof"), get(n, "redis-rewritten")
            kn = get(n, "kvd-no-hints")
            if not k or not ra:
                continue
            md.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                f"{n:,}", fmt(ratio(k["rss_l"], ra["rss_l"]), 2), fmt(ratio(k["rss_r"], ra["rss_r"]), 2),
                fmt(ratio(k["ready"], ra["ready"]), 2), fmt(ratio(k["ready"], rw["ready"]) if rw else None, 2),
                fmt(ratio(kn["ready"], ra["ready"]) if kn else None, 2),
                fmt(ratio(k["disk"], ra["disk"]), 2), fmt(ratio(k["disk"], rw["disk"]) if rw else None, 2)))
        # Growth between the smallest and largest key counts: marginal cost per key.
        if len(keys) >= 2:
            a, b = keys[0], keys[-1]
            md.append(f"\n### Marginal cost per key ({a:,} → {b:,} keys)\n")
            md.append("| server | RSS bytes/key | ready µs/key |")
            md.append("|---|---:|---:|")
            for srv in ("kvd", "kvd-no-hints", "redis-aof", "redis-rewritten"):
                x, y = get(a, srv), get(b, srv)
                if not x or not y:
                    continue
                drss = (y["rss_l"] - x["rss_l"]) * 1024 / (b - a) if x["rss_l"] and y["rss_l"] else None
                drdy = (y["ready"] - x["ready"]) * 1000 / (b - a) if x["ready"] and y["ready"] else None
                md.append("| %s | %s | %s |" % (srv, fmt(drss, 0), fmt(drdy, 2)))
        with open(os.path.join(outdir, "plot-memory.dat"), "w") as f:
            f.write("# keys_millions kvd_rss_mib redis_rss_mib kvd_ready_s redis_aof_ready_s redis_rewritten_ready_s"
                    " kvd_no_hints_ready_s\n")
            for n in keys:
                k, ra, rw = get(n, "kvd"), get(n, "redis-aof"), get(n, "redis-rewritten")
                kn = get(n, "kvd-no-hints")
                f.write("%g %s %s %s %s %s %s\n" % (
                    n / 1e6,
                    k["rss_l"] / 1024 if k and k["rss_l"] else "NaN",
                    ra["rss_l"] / 1024 if ra and ra["rss_l"] else "NaN",
                    k["ready"] / 1000 if k and k["ready"] else "NaN",
                    ra["ready"] / 1000 if ra and ra["ready"] else "NaN",
                    rw["ready"] / 1000 if rw and rw["ready"] else "NaN",
                    kn["ready"] / 1000 if kn and kn["ready"] else "NaN"))

    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")

    have_tp = os.path.exists(os.path.join(outdir, "plot-throughput.dat"))
    have_mem = bool(mrows)
    gp = ['set terminal pngcairo size 1400,%d font "sans,10"' % (950 if have_tp and have_mem else 480),
          'set output "%s"' % os.path.join(outdir, "performance.png")]
    if not have_tp and not have_mem:
        return 0
    gp.append("set multiplot")
    top = 0.5 if have_mem else 0.0
    if have_tp:
        gp += ['set origin 0,%g' % top, 'set size 1,%g' % (1 - top),
               'set title "Throughput, redis-benchmark -c 50, median of rounds (fsync mode under each workload)"',
               'set style data histogram', 'set style histogram clustered gap 1',
               'set style fill solid 0.8 border -1', 'set boxwidth 0.9', 'set logscale y',
               'set ylabel "ops/s (log scale)"', 'set grid ytics', 'set key top left',
               'set xtics font ",8"', 'set yrange [1000:*]',
               'plot "%s" using 2:xtic(1) title "kvd" lc rgb "#1f77b4", "" using 3 title "Redis" lc rgb "#d62728"'
               % os.path.join(outdir, "plot-throughput.dat"),
               'unset logscale y', 'set autoscale y', 'set xtics font ",10"', 'set style data linespoints',
               'set style fill empty']
    if have_mem:
        f = os.path.join(outdir, "plot-memory.dat")
        gp += ['set style data linespoints', 'set grid xtics ytics', 'set xlabel "million keys"',
               'set xrange [0:*]', 'set yrange [0:*]', 'set key top left',
               'set origin 0,0', 'set size 0.5,%g' % (top or 1),
               'set title "Resident memory after loading (16-byte keys, 100-byte values)"',
               'set ylabel "VmRSS, MiB"',
               'plot "%s" using 1:2 title "kvd" lw 2 lc rgb "#1f77b4" pt 7, '
               '"" using 1:3 title "Redis" lw 2 lc rgb "#d62728" pt 7' % f,
               'set origin 0.5,0', 'set size 0.5,%g' % (top or 1),
               'set title "Restart: exec to first PONG"', 'set ylabel "seconds"',
               'plot "%s" using 1:4 title "kvd, hint files" lw 2 lc rgb "#1f77b4" pt 7, '
               '"" using 1:7 title "kvd, --hint-files no (every record read)" lw 2 dt 2 lc rgb "#17becf" pt 5, '
               '"" using 1:5 title "Redis, AOF as written" lw 2 lc rgb "#d62728" pt 7, '
               '"" using 1:6 title "Redis, rewritten AOF (RDB base)" lw 2 dt 2 lc rgb "#ff7f0e" pt 5' % f]
    gp.append("unset multiplot")
    with open(os.path.join(outdir, "plot.gp"), "w") as f:
        f.write("\n".join(x for x in gp if x) + "\n")
    return 0


def main():
    a = sys.argv[1:]
    if not a:
        print(__doc__, file=sys.stderr)
        return 2
    if a[0] == "gen":
        gen(int(a[1]), int(a[2]) if len(a) > 2 else 100)
        return 0
    if a[0] == "ready":
        return ready(int(a[1]), int(a[2]), float(a[3]))
    if a[0] == "csv-row":
        return csv_row(a[1], a[2])
    if a[0] == "report":
        return report(a[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
