#!/usr/bin/python3
"""
kill9.py: kill -9 torture of the real kvd binary (tests/crash/README.md).

One cycle:
  1. several client threads (redis-py, one connection each) write to a
     running kvd on 127.0.0.1: SET, DEL (one key or several), INCR, MSET,
     MULTI/EXEC and non-transactional pipelines; every value is unique
     (cycle, client, op number, key and a filler derived from them), and
     every write goes into a ledger with the time it was sent and, if its
     reply arrived, the time of the reply (acknowledged) - else it was in
     flight when the server died;
  2. after a random delay kvd gets SIGKILL;
  3. kvfsck (if built) checks the directory while no kvd runs: it must be
     clean, or show only a torn tail at the end of the newest segment (what
     a process killed inside write() leaves; never acknowledged);
  4. sometimes kvd is started and killed again at once, during its start or
     recovery (and kvfsck runs again);
  5. kvd restarts on the same directory and every key is read back and
     checked against the ledger:
     - a key holds the value of a write W to it (or its state before the
       cycle) such that no acknowledged write to that key was sent after
       W's reply arrived (so nothing acknowledged is lost, and an in-flight
       write may or may not be there);
     - no key holds a value that was never sent (wrong bytes, wrong key, an
       op that does not exist, a value of an earlier cycle that had been
       overwritten);
     - a counter (INCR only) holds its value before the cycle plus every
       acknowledged increment plus some of the in-flight ones, and at least
       the largest INCR reply;
     - every batch (MSET, DEL of several keys, MULTI/EXEC) is all or
       nothing: if one of its keys shows its token, every other key shows
       it too or a write that was not acknowledged before the batch was
       sent; the INCRs of an in-flight EXEC count as applied exactly when
       its SETs are there;
     - the in-flight writes of one pipeline are applied as a prefix.
  The state read back is the starting point of the next cycle.

Every `--epoch` cycles (and at the end) kvd is stopped cleanly, kvfsck must
exit 0, a clean restart must give back exactly the same keys and values,
and the next epoch starts on a fresh directory.

Run with Debian's interpreter (python3-redis):
    /usr/bin/python3 tests/crash/kill9.py                      # 20 cycles, --fsync always
    KV_KILL9_CYCLES=1000 /usr/bin/python3 tests/crash/kill9.py # long run
    /usr/bin/python3 tests/crash/kill9.py --fsync everysec --cycles 50
Environment: KVD_BIN (default build/test/kv/kvd), KVFSCK_BIN (default
build/test/fsck/kvfsck if it exists, else the kvfsck checks are skipped),
KV_KILL9_CYCLES, KV_KILL9_SEED, KV_KILL9_CLIENTS, KV_KILL9_TIME_LIMIT;
`--help` lists the options.  Exit status 0: every check passed; 1: a
check failed (the data directory and kvd log are kept and their path
printed); 2: interrupted (SIGINT, SIGTERM, SIGHUP; kvd is stopped first).
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

import redis  # noqa: E402  (Debian's python3-redis: run under /usr/bin/python3)

from kvdtest import SANITIZER_MARKERS, KvdServer  # noqa: E402

NEG_INF = float("-inf")
POS_INF = float("inf")

# Key space. Private keys are written by one client only (so their writes
# are totally ordered), shared keys by every client, counters only by INCR.
N_PRIVATE = 24
N_SHARED = 16
N_COUNTERS = 4


def pkey(cid, i):
    return "p%d:%d" % (cid, i)


def pcounter(cid):
    return "pc%d" % cid


def skey(i):
    return "s:%d" % i


def scounter(i):
    return "n:%d" % i


def data_keys(nclients):
    ks = [pkey(c, i) for c in range(nclients) for i in range(N_PRIVATE)]
    return ks + [skey(i) for i in range(N_SHARED)]


def counter_keys(nclients):
    return [pcounter(c) for c in range(nclients)] + [scounter(i) for i in range(N_COUNTERS)]


# ---- values ----
#
# value = b"<cycle>.<cid>.<seq>.<key>#" + filler; the filler is the sha1 hex
# of the prefix repeated to the value's length, so any value read back can
# be checked to be one this driver could have written, for that key, and
# named by its op.

def make_value(token, key, length):
    prefix = ("%s.%s#" % (token, key)).encode()
    pat = hashlib.sha1(prefix).hexdigest().encode()
    n = max(0, length - len(prefix))
    return prefix + (pat * (n // len(pat) + 1))[:n]


def parse_value(v, key):
    """(cycle, cid, seq) if v is a well-formed value for key, else None."""
    try:
        head, _ = v.split(b"#", 1)
        parts = head.decode().split(".", 3)
        cyc, cid, seq, k = int(parts[0]), int(parts[1]), int(parts[2]), parts[3]
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    if k != key:
        return None
    token = "%d.%d.%d" % (cyc, cid, seq)
    if make_value(token, key, len(v)) != v:
        return None
    return (cyc, cid, seq)


def short(v, n=60):
    if v is None:
        return "(absent)"
    return repr(v[:n]) + ("...(%d bytes)" % len(v) if len(v) > n else "")


# ---- ledger ----

class Op:
    """One command (or one SET of a pipeline). writes: key -> value (None
    for a delete); incrs: counter -> increments; send/ack: monotonic times
    (ack None while in flight)."""
    __slots__ = ("kind", "cid", "seq", "token", "writes", "incrs", "send", "ack",
                 "replies", "pipe", "pipe_idx")

    def __init__(self, kind, cid, seq, token):
        self.kind = kind
        self.cid = cid
        self.seq = seq
        self.token = token
        self.writes = {}
        self.incrs = {}
        self.send = None
        self.ack = None
        self.replies = {}    # counter -> INCR reply
        self.pipe = None     # (cid, seq of the pipeline) for pipelined SETs
        self.pipe_idx = 0

    @property
    def acked(self):
        return self.ack is not None

    def ack_time(self):
        return self.ack if self.ack is not None else POS_INF

    def is_batch(self):
        return len(self.writes) + len(self.incrs) > 1

    def describe(self):
        parts = []
        for k, v in self.writes.items():
            parts.append("%s=%s" % (k, "DEL" if v is None else short(v, 40)))
        for k, n in self.incrs.items():
            parts.append("INCR %s x%d" % (k, n))
        return "%s by client %d op %d (sent %.6f, %s): %s" % (
            self.kind, self.cid, self.seq, self.send,
            "acked %.6f" % self.ack if self.acked else "in flight", ", ".join(parts))


class Baseline:
    """The state of a key before the cycle: the earliest 'write'."""
    kind = "before-cycle"
    ack = NEG_INF
    send = NEG_INF
    acked = True

    def ack_time(self):
        return NEG_INF

    def describe(self):
        return "state before this cycle"


BASE = Baseline()


class CheckFailure(Exception):
    pass


# ---- client threads ----

class Worker(threading.Thread):
    MAX_OPS = 200000  # per cycle; bounds the loop even if the kill never comes

    def __init__(self, cid, port, cycle, seed, barrier, killed, cfg):
        super().__init__(name="client-%d" % cid, daemon=True)
        self.cid = cid
        self.port = port
        self.cycle = cycle
        self.rng = random.Random(seed)
        self.barrier = barrier
        self.killed = killed
        self.cfg = cfg
        self.ops = []          # every op sent (the ledger of this client)
        self.error = None      # an unexpected failure (not the kill)
        self.seq = 0

    # -- op generation --

    def vlen(self):
        x = self.rng.random()
        if x < 0.85:
            return self.rng.randint(0, 100)
        if x < 0.98:
            return self.rng.randint(100, 2000)
        return self.rng.randint(4000, 40000)   # records that span pages

    def new_op(self, kind):
        self.seq += 1
        return Op(kind, self.cid, self.seq, "%d.%d.%d" % (self.cycle, self.cid, self.seq))

    def put(self, op, key):
        op.writes[key] = make_value(op.token, key, self.vlen())

    def private_keys(self, n):
        return [pkey(self.cid, i) for i in self.rng.sample(range(N_PRIVATE), n)]

    KINDS = (("set_p", 22), ("set_s", 10), ("del_p", 6), ("del_s", 3), ("del_multi", 3),
             ("incr_s", 10), ("incr_p", 5), ("mset", 12), ("multi", 14), ("pipe", 10))

    def gen(self):
        """Returns (kind, [ops]); a pipeline gives one op per SET."""
        kind = self.rng.choices([k for k, _ in self.KINDS], [w for _, w in self.KINDS])[0]
        rng = self.rng
        if kind == "pipe":
            n = rng.randint(2, 6)
            base = self.new_op("pipe")
            ops = []
            for i, k in enumerate(self.private_keys(n)):
                op = self.new_op("pipe-set")
                op.pipe = (self.cid, base.seq)
                op.pipe_idx = i
                self.put(op, k)
                ops.append(op)
            return kind, ops
        op = self.new_op(kind)
        if kind == "set_p":
            self.put(op, self.private_keys(1)[0])
        elif kind == "set_s":
            self.put(op, skey(rng.randrange(N_SHARED)))
        elif kind == "del_p":
            op.writes[self.private_keys(1)[0]] = None
        elif kind == "del_s":
            op.writes[skey(rng.randrange(N_SHARED))] = None
        elif kind == "del_multi":
            for k in self.private_keys(rng.randint(2, 3)):
                op.writes[k] = None
        elif kind == "incr_s":
            op.incrs[scounter(rng.randrange(N_COUNTERS))] = 1
        elif kind == "incr_p":
            op.incrs[pcounter(self.cid)] = 1
        elif kind == "mset":
            for k in self.private_keys(rng.randint(2, 4)):
                self.put(op, k)
            if rng.random() < 0.4:
                self.put(op, skey(rng.randrange(N_SHARED)))
        elif kind == "multi":
            keys = self.private_keys(rng.randint(1, 4))
            for k in keys[:-1] if len(keys) > 1 else keys:
                self.put(op, k)
            if len(keys) > 1:
                if rng.random() < 0.5:
                    op.writes[keys[-1]] = None
                else:
                    self.put(op, keys[-1])
            if rng.random() < 0.5:
                self.put(op, skey(rng.randrange(N_SHARED)))
            for _ in range(rng.randint(0, 2)):
                c = scounter(rng.randrange(N_COUNTERS)) if rng.random() < 0.7 else pcounter(self.cid)
                op.incrs[c] = 1
        return kind, [op]

    # -- execution --

    def execute(self, r, kind, ops):
        op = ops[0]
        if kind in ("set_p", "set_s"):
            (k, v), = op.writes.items()
            res = r.set(k, v)
            if res is not True:
                raise CheckFailure("SET %s answered %r" % (k, res))
        elif kind in ("del_p", "del_s", "del_multi"):
            res = r.delete(*op.writes.keys())
            if not isinstance(res, int):
                raise CheckFailure("DEL answered %r" % (res,))
        elif kind in ("incr_s", "incr_p"):
            (k, _), = op.incrs.items()
            op.replies[k] = r.incr(k)
        elif kind == "mset":
            res = r.mset(op.writes)
            if res is not True:
                raise CheckFailure("MSET answered %r" % (res,))
        elif kind == "multi":
            p = r.pipeline(transaction=True)
            order = []
            for k, v in op.writes.items():
                if v is None:
                    p.delete(k)
                else:
                    p.set(k, v)
                order.append(k)
            for k in op.incrs:
                p.incr(k)
                order.append(("incr", k))
            res = p.execute()
            if len(res) != len(order):
                raise CheckFailure("EXEC answered %d replies for %d commands" % (len(res), len(order)))
            for what, rep in zip(order, res):
                if isinstance(rep, Exception):
                    raise CheckFailure("EXEC: %r answered %r" % (what, rep))
                if isinstance(what, tuple):
                    op.replies[what[1]] = rep
        elif kind == "pipe":
            p = r.pipeline(transaction=False)
            for o in ops:
                (k, v), = o.writes.items()
                p.set(k, v)
            res = p.execute()
            if res != [True] * len(ops):
                raise CheckFailure("pipelined SETs answered %r" % (res,))
        else:
            raise AssertionError(kind)

    def run(self):
        r = None
        try:
            r = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=15,
                            socket_connect_timeout=5)
            r.ping()
        except Exception as e:  # noqa: BLE001
            self.error = "client %d could not connect: %r" % (self.cid, e)
            try:
                self.barrier.abort()
            except Exception:  # noqa: BLE001
                pass
            return
        try:
            self.barrier.wait(timeout=20)
        except threading.BrokenBarrierError:
            self.error = self.error or "start barrier broken"
            return
        try:
            for _ in range(self.MAX_OPS):
                if self.killed.is_set():
                    break
                kind, ops = self.gen()
                t = time.monotonic()
                for o in ops:
                    o.send = t
                self.ops.extend(ops)
                try:
                    self.execute(r, kind, ops)
                except (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError) as e:
                    if self.killed.is_set():
                        break  # in flight at the kill: ops keep ack None
                    self.error = "client %d: %s failed before the kill: %r" % (self.cid, kind, e)
                    break
                except (redis.RedisError, CheckFailure) as e:
                    self.error = "client %d: %s got an unexpected reply: %r\n  %s" % (
                        self.cid, kind, e, ops[0].describe())
                    break
                t = time.monotonic()
                for o in ops:
                    o.ack = t
        except Exception:  # noqa: BLE001  (a bug here must fail the run, not pass as "in flight")
            self.error = "client %d crashed:\n%s" % (self.cid, traceback.format_exc())
        finally:
            try:
                r.close()
            except Exception:  # noqa: BLE001
                pass


# ---- checker ----

class Stats:
    def __init__(self):
        self.cycles = 0
        self.start_kills = 0
        self.ops_total = 0
        self.acked_ops = 0
        self.acked_key_writes = 0
        self.acked_incrs = 0
        self.inflight_ops = 0
        self.inflight_applied = 0
        self.inflight_not_applied = 0
        self.inflight_unknown = 0
        self.batches_checked = 0
        self.lost_acked = 0
        self.never_written = 0
        self.torn_batches = 0
        self.pipeline_gaps = 0
        self.torn_tail_cuts = 0
        self.torn_bytes_cut = 0
        self.kvfsck_runs = 0
        self.kvfsck_clean = 0
        self.kvfsck_torn_only = 0
        self.epochs = 0
        self.kill_delays = []
        self.acked_last_second = 0

    def violations(self):
        return self.lost_acked + self.never_written + self.torn_batches + self.pipeline_gaps


def check_cycle(cycle, ops, base_data, base_counters, final_data, final_counters, stats):
    """Checks the state read back after the restart against the ledger of
    the cycle. Returns a list of problem descriptions (empty: all good)."""
    problems = []
    by_key = {}
    for op in ops:
        for k in op.writes:
            by_key.setdefault(k, []).append(op)

    def value_of(w, k):
        return base_data[k] if w is BASE else w.writes[k]

    def before(w, a):
        """w's reply arrived before a was sent: w is ordered before a."""
        return w.ack_time() < a.send

    # Which write each key's value comes from (best candidate).
    source = {}
    for k in final_data:
        writes = by_key.get(k, [])
        obs = final_data[k]
        acked = [a for a in writes if a.acked]
        matching = [w for w in [BASE] + writes if value_of(w, k) == obs]
        if not matching:
            if obs is not None and parse_value(obs, k) is None:
                stats.never_written += 1
                problems.append("key %s holds a value that was never written: %s" % (k, short(obs)))
            elif obs is not None and parse_value(obs, k)[0] == cycle:
                stats.never_written += 1
                problems.append("key %s holds %s, written by no op of this cycle for this key" % (k, short(obs)))
            else:
                # an older value, or absent although no delete ran: every
                # acknowledged write of the cycle is lost, and the baseline
                # too if nothing was acknowledged
                lost = acked if acked else [BASE]
                stats.lost_acked += len(lost)
                problems.append("key %s holds %s, neither its state before the cycle (%s) nor a write of the cycle; lost:\n    %s" % (
                    k, short(obs), short(base_data[k]), "\n    ".join(a.describe() for a in lost)))
            continue
        good = [w for w in matching if not any(a is not w and before(w, a) for a in acked)]
        if good:
            source[k] = max(good, key=lambda w: (w.ack_time(), w.send))
            continue
        w = max(matching, key=lambda x: (x.ack_time(), x.send))
        lost = [a for a in acked if a is not w and before(w, a)]
        stats.lost_acked += len(lost)
        problems.append("key %s holds %s from %s, but acknowledged later writes are missing:\n    %s" % (
            k, short(obs), w.describe(), "\n    ".join(a.describe() for a in lost)))

    # Batches: all or nothing.
    applied = {}  # op -> True/False/None (known applied / known not / unknown)
    for op in ops:
        shown = [k for k, v in op.writes.items() if v is not None and final_data.get(k) == v]
        if shown:
            applied[op] = True
        elif any(v is not None and k.startswith("p") for k, v in op.writes.items()) and not op.acked:
            # an in-flight op is its client's last: nothing overwrote its
            # private keys, so not showing means not applied
            applied[op] = False
        else:
            applied[op] = True if op.acked else None
        if not op.is_batch() or not shown:
            continue
        stats.batches_checked += 1
        for k, v in op.writes.items():
            obs = final_data.get(k)
            if obs == v:
                continue
            src = source.get(k)
            if src is None:
                continue  # the key's value is already reported as wrong
            if src is BASE or before(src, op):
                stats.torn_batches += 1
                problems.append("torn batch: %s is visible in %s but key %s holds %s (from %s)" % (
                    op.describe(), ", ".join(shown), k, short(obs), src.describe()))

    # Pipelines in flight: applied as a prefix.
    pipes = {}
    for op in ops:
        if op.pipe is not None and not op.acked:
            pipes.setdefault(op.pipe, []).append(op)
    for pid, pops in pipes.items():
        pops.sort(key=lambda o: o.pipe_idx)
        flags = [applied[o] for o in pops]
        if True in flags:
            last = max(i for i, f in enumerate(flags) if f)
            if not all(flags[:last + 1]):
                stats.pipeline_gaps += 1
                problems.append("pipeline of client %d applied out of order (applied: %s):\n    %s" % (
                    pid[0], flags, "\n    ".join(o.describe() for o in pops)))

    # Counters.
    for c, final in final_counters.items():
        base = base_counters[c]
        acked_n = lo_extra = hi_extra = 0
        max_reply = None
        for op in ops:
            n = op.incrs.get(c)
            if not n:
                continue
            if op.acked:
                acked_n += n
                rep = op.replies.get(c)
                if rep is not None:
                    max_reply = rep if max_reply is None else max(max_reply, rep)
            else:
                if applied.get(op) is True:
                    lo_extra += n
                if applied.get(op) is not False:
                    hi_extra += n
        lo = base + acked_n + lo_extra
        hi = base + acked_n + hi_extra
        if final < lo or (max_reply is not None and final < max_reply):
            lost = max(lo - final, (max_reply or 0) - final)
            stats.lost_acked += lost
            problems.append("counter %s is %d; expected %d..%d (before the cycle %d, %d acknowledged increments, largest reply %r)" % (
                c, final, lo, hi, base, acked_n, max_reply))
        elif final > hi:
            stats.never_written += final - hi
            problems.append("counter %s is %d; expected %d..%d: more increments than were sent" % (c, final, lo, hi))

    # Figures.
    for op in ops:
        if op.acked:
            stats.acked_ops += 1
            stats.acked_key_writes += len(op.writes)
            stats.acked_incrs += sum(op.incrs.values())
        else:
            stats.inflight_ops += 1
            a = applied.get(op)
            if a is True:
                stats.inflight_applied += 1
            elif a is False:
                stats.inflight_not_applied += 1
            else:
                stats.inflight_unknown += 1
    stats.ops_total += len(ops)
    return problems


# ---- self-test of the checker (no server) ----

def self_test():
    """Feeds check_cycle made-up ledgers and states: each legal outcome must
    pass, each broken one must be reported as the right kind of problem."""
    cyc = 7
    failures = []

    def mk(kind, cid, seq, send, ack, writes=(), incrs=(), replies=(), pipe=None, idx=0):
        op = Op(kind, cid, seq, "%d.%d.%d" % (cyc, cid, seq))
        for k, length in writes:
            op.writes[k] = None if length is None else make_value(op.token, k, length)
        for k in incrs:
            op.incrs[k] = 1
        op.replies.update(dict(replies))
        op.send, op.ack = send, ack
        op.pipe, op.pipe_idx = pipe, idx
        return op

    def case(name, ops, final, expect, base=None, counters=None, base_counters=None):
        bd = {k: None for k in data_keys(2)}
        bd.update(base or {})
        bc = {k: 0 for k in counter_keys(2)}
        bc.update(base_counters or {})
        fd = dict(bd)
        fd.update(final)
        fc = dict(bc)
        fc.update(counters or {})
        st = Stats()
        probs = check_cycle(cyc, ops, bd, bc, fd, fc, st)
        got = {"lost": st.lost_acked, "never": st.never_written, "torn": st.torn_batches,
               "gap": st.pipeline_gaps}
        got = {k: v for k, v in got.items() if v}
        if set(got) != set(expect):
            failures.append("%s: expected %s, got %s %s" % (name, sorted(expect) or "pass", got, probs))

    a = mk("set_p", 0, 1, 1, 2, [("p0:1", 10)])
    b = mk("set_p", 0, 2, 3, 4, [("p0:1", 3000)])
    bi = mk("set_p", 0, 2, 3, None, [("p0:1", 3000)])
    case("acked write present", [a], {"p0:1": a.writes["p0:1"]}, [])
    case("acked overwrite lost", [a, b], {"p0:1": a.writes["p0:1"]}, ["lost"])
    case("later write present", [a, b], {"p0:1": b.writes["p0:1"]}, [])
    case("in flight applied", [a, bi], {"p0:1": bi.writes["p0:1"]}, [])
    case("in flight not applied", [a, bi], {"p0:1": a.writes["p0:1"]}, [])
    case("acked write vanished", [a, bi], {"p0:1": None}, ["lost"])
    case("baseline lost", [], {"p0:1": None}, ["lost"], base={"p0:1": make_value("6.0.1", "p0:1", 5)})
    case("baseline kept", [], {}, [], base={"p0:1": make_value("6.0.1", "p0:1", 5)})
    case("garbage value", [a], {"p0:1": b"xyz"}, ["never"])
    case("value of another key", [a], {"p0:1": a.writes["p0:1"], "p0:2": a.writes["p0:1"]}, ["never"])
    case("one flipped filler byte", [a], {"p0:1": a.writes["p0:1"][:-1] + b"!"}, ["never"])
    case("op that was never sent", [a], {"p0:1": make_value("7.0.9", "p0:1", 10)}, ["never"])
    case("older value resurrected", [a], {"p0:1": make_value("3.0.1", "p0:1", 10)}, ["lost"])
    d = mk("del_p", 0, 3, 5, 6, [("p0:1", None)])
    case("delete applied", [a, b, d], {"p0:1": None}, [])
    case("delete lost", [a, b, d], {"p0:1": b.writes["p0:1"]}, ["lost"])
    # shared keys: concurrent writes may land in either order
    x = mk("set_s", 0, 1, 1, 5, [("s:1", 10)])
    y = mk("set_s", 1, 1, 2, 3, [("s:1", 10)])
    z = mk("set_s", 1, 2, 6, 7, [("s:1", 10)])
    case("concurrent x", [x, y], {"s:1": x.writes["s:1"]}, [])
    case("concurrent y", [x, y], {"s:1": y.writes["s:1"]}, [])
    case("later z lost", [x, y, z], {"s:1": x.writes["s:1"]}, ["lost"])
    # batches
    m = mk("mset", 0, 1, 1, None, [("p0:1", 10), ("p0:2", 10), ("s:2", 10)])
    case("batch whole", [m], {k: v for k, v in m.writes.items()}, [])
    case("batch absent", [m], {}, [])
    case("batch torn", [m], {"p0:1": m.writes["p0:1"]}, ["torn"])
    case("batch torn on shared key", [m], {"s:2": m.writes["s:2"]}, ["torn"])
    m2 = mk("mset", 0, 1, 1, 2, [("p0:1", 10), ("p0:2", 10), ("s:2", 10)])
    w = mk("set_s", 1, 1, 3, None, [("s:2", 10)])
    over = dict(m2.writes)
    over["s:2"] = w.writes["s:2"]
    case("batch then later write", [m2, w], over, [])
    early = mk("set_s", 1, 1, 0.1, 0.5, [("s:2", 10)])
    over["s:2"] = early.writes["s:2"]
    case("batch key holds an earlier write", [m2, early], over, ["lost"])
    m3 = mk("mset", 0, 1, 1, None, [("p0:1", 10), ("s:2", 10)])
    case("in-flight batch, key holds an earlier write", [early, m3],
         {"p0:1": m3.writes["p0:1"], "s:2": early.writes["s:2"]}, ["torn"])
    # counters
    incs = [mk("incr_s", 0, i, 2 * i, 2 * i + 1, incrs=["n:0"], replies=[("n:0", 5 + i)]) for i in (1, 2, 3)]
    fly = mk("incr_s", 1, 1, 3, None, incrs=["n:0"])
    for val, exp in ((8, []), (9, []), (7, ["lost"]), (10, ["never"])):
        case("counter %d" % val, incs + [fly], {}, exp, counters={"n:0": val}, base_counters={"n:0": 5})
    tx = mk("multi", 0, 1, 1, None, [("p0:3", 10)], incrs=["n:1"])
    case("exec applied with its incr", [tx], {"p0:3": tx.writes["p0:3"]}, [], counters={"n:1": 1})
    case("exec applied without its incr", [tx], {"p0:3": tx.writes["p0:3"]}, ["lost"], counters={"n:1": 0})
    case("exec not applied but its incr is", [tx], {}, ["never"], counters={"n:1": 1})
    # pipelines in flight: a prefix
    pp = [mk("pipe-set", 0, 2 + i, 1, None, [("p0:%d" % (10 + i), 10)], pipe=(0, 1), idx=i) for i in range(3)]
    case("pipeline prefix", pp, {"p0:10": pp[0].writes["p0:10"], "p0:11": pp[1].writes["p0:11"]}, [])
    case("pipeline gap", pp, {"p0:10": pp[0].writes["p0:10"], "p0:12": pp[2].writes["p0:12"]}, ["gap"])
    for f in failures:
        print("self-test FAILED: %s" % f)
    print("kill9 self-test of the checker: %s" % ("FAIL" if failures else "PASS"))
    return 1 if failures else 0


# ---- kvfsck ----

class Fsck:
    def __init__(self, path):
        self.path = path

    def check(self, datadir, allow_torn_tail, stats, what):
        """kvfsck --json DIR: exit 0, or (allow_torn_tail) exit 4 with
        torn-tail problems only, at the end of the newest segment."""
        if not self.path:
            return
        p = subprocess.run([self.path, "--json", datadir], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=300)
        stats.kvfsck_runs += 1
        out = p.stdout.decode(errors="replace")
        err = p.stderr.decode(errors="replace")
        if any(m in err for m in SANITIZER_MARKERS):
            raise CheckFailure("kvfsck (%s) printed a sanitizer report:\n%s" % (what, err[-4000:]))
        if p.returncode == 0:
            stats.kvfsck_clean += 1
            return
        if p.returncode == 4 and allow_torn_tail:
            try:
                rep = json.loads(out)
            except ValueError:
                raise CheckFailure("kvfsck (%s) exited 4 with unreadable JSON:\n%s\n%s" % (what, out[-3000:], err[-2000:]))
            bad = []
            for seg in rep.get("segments", []):
                for pr in seg.get("problems", []):
                    if pr.get("kind") != "torn tail" or not seg.get("newest") or \
                            pr.get("offset", 0) + pr.get("length", 0) != seg.get("bytes"):
                        bad.append((seg.get("file"), pr))
            if not bad and rep["summary"]["problems"] > 0:
                stats.kvfsck_torn_only += 1
                return
            raise CheckFailure("kvfsck (%s) found more than a torn tail at the end of the newest segment: %r\n%s" % (
                what, bad, out[-3000:]))
        raise CheckFailure("kvfsck (%s) exited %d on %s:\n%s\n%s" % (what, p.returncode, datadir, out[-4000:], err[-3000:]))


def find_kvfsck():
    if "KVFSCK_BIN" in os.environ:
        b = os.environ["KVFSCK_BIN"]   # empty: kvfsck is not built, skip
        if b and not os.path.exists(b):
            raise SystemExit("KVFSCK_BIN=%s does not exist" % b)
        return b or None
    d = os.path.join(SRC, "build", "test", "fsck", "kvfsck")
    return d if os.path.exists(d) else None


# ---- driver ----

def read_state(srv, nclients):
    r = srv.client(socket_timeout=30)
    try:
        dk = data_keys(nclients)
        ck = counter_keys(nclients)
        data, counters = {}, {}
        for i in range(0, len(dk), 100):
            chunk = dk[i:i + 100]
            for k, v in zip(chunk, r.mget(chunk)):
                data[k] = v
        for k, v in zip(ck, r.mget(ck)):
            counters[k] = int(v) if v is not None else 0
        info = r.info("persistence")
        return data, counters, info
    finally:
        r.close()


def check_server_output(srv):
    reports = srv.sanitizer_reports()
    if reports:
        raise CheckFailure("sanitizer report in kvd output (%s):\n%s\n%s" % (
            ", ".join(reports), srv.read_log()[-6000:], srv.read_stderr()[-6000:]))


def start_checked(srv):
    srv.start()
    check_server_output(srv)


def inject_loss(datadir, nbytes):
    """For --inject-loss: cuts the last nbytes of the newest segment's log
    (at most down to its 32-byte header), as a kvd that lost acknowledged
    writes would leave it. The run must then report them lost."""
    segs = sorted(f for f in os.listdir(datadir) if f.endswith(".seg"))
    if not segs:
        return
    path = os.path.join(datadir, segs[-1])
    with open(path, "rb") as f:
        data = f.read()
    # The log ends at its last non-zero byte: the zeros after it are
    # space kvd preallocated (--preallocate yes), not writes.
    end = len(data.rstrip(b"\0"))
    os.truncate(path, max(32, end - nbytes))


def run(args):
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    fsck = Fsck(find_kvfsck())
    stats = Stats()
    t0 = time.monotonic()
    print("kill9: kvd %s, --fsync %s, %d cycles, %d clients, kill after %.3f..%.3f s, seed %d" % (
        os.environ.get("KVD_BIN") or os.path.join(SRC, "build", "test", "kv", "kvd"), args.fsync, args.cycles,
        args.clients, args.min_delay, args.max_delay, seed), flush=True)
    if fsck.path:
        print("kill9: kvfsck %s" % fsck.path, flush=True)
    else:
        print("kill9: kvfsck not built (KVFSCK_BIN empty, or unset and no build/test/fsck/kvfsck): SKIPPING the kvfsck checks", flush=True)

    workdir = tempfile.mkdtemp(prefix="kvd-kill9-")
    srv = None
    ok = False
    detected = False
    time_limited = False
    try:
        cycle = 0
        while cycle < args.cycles:
            # ---- a new epoch: fresh data directory ----
            stats.epochs += 1
            edir = os.path.join(workdir, "epoch%d" % stats.epochs)
            os.makedirs(edir)
            srv = KvdServer(["--fsync", args.fsync, "--segment-size", args.segment_size],
                            workdir=edir)
            start_checked(srv)
            base_data = {k: None for k in data_keys(args.clients)}
            base_counters = {k: 0 for k in counter_keys(args.clients)}
            in_epoch = 0
            while cycle < args.cycles and in_epoch < args.epoch:
                if args.time_limit and time.monotonic() - t0 > args.time_limit:
                    time_limited = True
                    break
                cycle += 1
                in_epoch += 1
                # ---- load, then SIGKILL at a random moment ----
                killed = threading.Event()
                barrier = threading.Barrier(args.clients + 1)
                workers = [Worker(c, srv.port, cycle, rng.randrange(1 << 32), barrier, killed, args)
                           for c in range(args.clients)]
                for w in workers:
                    w.start()
                try:
                    barrier.wait(timeout=30)
                except threading.BrokenBarrierError:
                    killed.set()
                    for w in workers:
                        w.join(30)
                    raise CheckFailure("cycle %d: clients did not start: %s" % (
                        cycle, "; ".join(w.error for w in workers if w.error)))
                delay = rng.uniform(0, 0.01) if rng.random() < 0.15 else rng.uniform(args.min_delay, args.max_delay)
                time.sleep(delay)
                if not srv.running():
                    killed.set()
                    raise CheckFailure("cycle %d: kvd exited on its own (status %r) before the kill:\n%s\n%s" % (
                        cycle, srv.proc.poll(), srv.read_log()[-4000:], srv.read_stderr()[-4000:]))
                killed.set()
                t_kill = time.monotonic()
                srv.kill9()
                stats.kill_delays.append(delay)
                for w in workers:
                    w.join(60)
                    if w.is_alive():
                        raise CheckFailure("cycle %d: client %d did not finish within 60 s of the kill" % (cycle, w.cid))
                errors = [w.error for w in workers if w.error]
                if errors:
                    raise CheckFailure("cycle %d: %s" % (cycle, "\n".join(errors)))
                ops = [o for w in workers for o in w.ops]
                stats.acked_last_second += sum(1 for o in ops if o.acked and o.ack >= t_kill - 1.0)
                # ---- kvfsck on the killed directory ----
                fsck.check(srv.dir, True, stats, "cycle %d, after kill -9" % cycle)
                if args.inject_loss:
                    inject_loss(srv.dir, args.inject_loss)
                # ---- sometimes: kill again during start / recovery ----
                if rng.random() < args.start_kill:
                    srv.start(wait=False)
                    time.sleep(rng.uniform(0, 0.05))
                    srv.kill9()
                    stats.start_kills += 1
                    fsck.check(srv.dir, True, stats, "cycle %d, after kill -9 during start" % cycle)
                # ---- restart and check ----
                start_checked(srv)
                final_data, final_counters, info = read_state(srv, args.clients)
                problems = check_cycle(cycle, ops, base_data, base_counters, final_data, final_counters, stats)
                rp, cut = info.get("recovery_problems", 0), info.get("recovery_torn_bytes_cut", 0)
                if cut:
                    stats.torn_tail_cuts += 1
                    stats.torn_bytes_cut += cut
                if rp > 1 or (rp and not cut):
                    problems.append("recovery reported %d problems (%d torn bytes cut): more than a torn tail" % (rp, cut))
                stats.cycles += 1
                n_acked = sum(1 for o in ops if o.acked)
                print("cycle %d: kill after %.3f s, %d writes acked, %d in flight, recovery %d records%s%s" % (
                    cycle, delay, n_acked, len(ops) - n_acked, info.get("recovery_records", -1),
                    ", torn tail of %d bytes cut" % cut if cut else "",
                    "" if not problems else ", %d PROBLEMS" % len(problems)), flush=True)
                if problems:
                    raise CheckFailure("cycle %d (seed %d):\n  %s" % (cycle, seed, "\n  ".join(problems[:50])))
                base_data, base_counters = final_data, final_counters
            # ---- end of epoch: clean stop, kvfsck clean, identical restart ----
            rc = srv.stop()
            if rc != 0:
                raise CheckFailure("kvd exited %r on SIGTERM:\n%s" % (rc, srv.read_log()[-4000:]))
            fsck.check(srv.dir, False, stats, "epoch %d, after a clean stop" % stats.epochs)
            start_checked(srv)
            again_data, again_counters, _ = read_state(srv, args.clients)
            if again_data != base_data or again_counters != base_counters:
                diff = [k for k in base_data if again_data.get(k) != base_data[k]]
                diff += [k for k in base_counters if again_counters.get(k) != base_counters[k]]
                raise CheckFailure("a clean restart changed keys: %s" % diff[:20])
            rc = srv.stop()
            if rc != 0:
                raise CheckFailure("kvd exited %r on SIGTERM:\n%s" % (rc, srv.read_log()[-4000:]))
            check_server_output(srv)
            shutil.rmtree(edir, ignore_errors=True)
            srv = None
            if time_limited:
                break
        ok = stats.violations() == 0
    except CheckFailure as e:
        print("\nFAIL: %s" % e, flush=True)
        if args.inject_loss and stats.lost_acked > 0:
            detected = True
    finally:
        if srv is not None:
            try:
                srv.kill9() if not ok else srv.stop()
            except Exception as e:  # noqa: BLE001
                print("stopping kvd: %r" % e)
        elapsed = time.monotonic() - t0
        d = stats.kill_delays
        print()
        print("kill9 summary (--fsync %s, seed %d):" % (args.fsync, seed))
        print("  cycles:                         %d of %d%s (%d epochs, %d extra kills during start)" % (
            stats.cycles, args.cycles, " (time limit %.0f s reached)" % args.time_limit if time_limited else "",
            stats.epochs, stats.start_kills))
        if d:
            print("  kill delay:                     %.3f..%.3f s (mean %.3f)" % (min(d), max(d), sum(d) / len(d)))
        print("  writes sent:                    %d" % stats.ops_total)
        print("  acknowledged writes checked:    %d (%d key writes, %d increments)" % (
            stats.acked_ops, stats.acked_key_writes, stats.acked_incrs))
        print("  acked within 1 s before a kill: %d (under everysec/no possibly not yet synced; all checked)" % (
            stats.acked_last_second))
        print("  in-flight writes seen:          %d (applied %d, not applied %d, unknown %d)" % (
            stats.inflight_ops, stats.inflight_applied, stats.inflight_not_applied, stats.inflight_unknown))
        print("  batches seen applied, checked:  %d" % stats.batches_checked)
        print("  torn tails cut by recovery:     %d (%d bytes)" % (stats.torn_tail_cuts, stats.torn_bytes_cut))
        if fsck.path:
            print("  kvfsck runs:                    %d (clean %d, torn tail only %d)" % (
                stats.kvfsck_runs, stats.kvfsck_clean, stats.kvfsck_torn_only))
        else:
            print("  kvfsck runs:                    skipped (kvfsck not built)")
        print("  lost acknowledged writes:       %d" % stats.lost_acked)
        print("  values never written:           %d" % stats.never_written)
        print("  torn batches:                   %d" % stats.torn_batches)
        print("  pipelines out of order:         %d" % stats.pipeline_gaps)
        print("  time:                           %.1f s" % elapsed)
        if args.inject_loss:
            shutil.rmtree(workdir, ignore_errors=True)
            print("kill9: injected loss (%d bytes cut from the log after each kill) %s" % (
                args.inject_loss, "detected: PASS" if detected else "NOT detected: FAIL"))
            sys.stdout.flush()
            return 0 if detected else 1
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
            print("kill9: PASS")
        else:
            print("kill9: FAIL; data directories and kvd logs kept in %s" % workdir)
        sys.stdout.flush()
    return 0 if ok else 1


def env_num(name, default, conv=int):
    v = os.environ.get(name)
    return conv(v) if v not in (None, "") else default


def main():
    ap = argparse.ArgumentParser(description="kill -9 torture of kvd (tests/crash/README.md)")
    ap.add_argument("--fsync", default=os.environ.get("KV_KILL9_FSYNC", "always"),
                    choices=("always", "everysec", "no"))
    ap.add_argument("--cycles", type=int, default=None,
                    help="kill/restart cycles (default: $<cycles-env>, else --default-cycles)")
    ap.add_argument("--cycles-env", default="KV_KILL9_CYCLES",
                    help="environment variable that sets the cycle count (default KV_KILL9_CYCLES)")
    ap.add_argument("--default-cycles", type=int, default=20)
    ap.add_argument("--clients", type=int, default=env_num("KV_KILL9_CLIENTS", 4))
    ap.add_argument("--seed", type=int, default=env_num("KV_KILL9_SEED", None))
    ap.add_argument("--min-delay", type=float, default=env_num("KV_KILL9_MIN_DELAY", 0.02, float),
                    help="seconds of load before the kill, lower bound (15%% of kills come within 10 ms instead)")
    ap.add_argument("--max-delay", type=float, default=env_num("KV_KILL9_MAX_DELAY", 0.5, float))
    ap.add_argument("--start-kill", type=float, default=env_num("KV_KILL9_START_KILL", 0.2, float),
                    help="probability of an extra kill during kvd's start/recovery in a cycle")
    ap.add_argument("--epoch", type=int, default=env_num("KV_KILL9_EPOCH", 100),
                    help="cycles per data directory; then clean stop, kvfsck, fresh directory")
    ap.add_argument("--segment-size", default=os.environ.get("KV_KILL9_SEGMENT_SIZE", "1mb"),
                    help="kvd --segment-size (small, so segments rotate under the load)")
    ap.add_argument("--time-limit", type=float, default=env_num("KV_KILL9_TIME_LIMIT", 0, float),
                    help="stop starting cycles after this many seconds (0: no limit)")
    ap.add_argument("--inject-loss", type=int, default=0, metavar="BYTES",
                    help="test the test: cut BYTES from the log after each kill; "
                         "exit 0 only if the lost acknowledged writes are reported")
    ap.add_argument("--self-test", action="store_true",
                    help="only check the checker against made-up ledgers (no server)")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if args.cycles is None:
        args.cycles = env_num(args.cycles_env, args.default_cycles)
    if args.cycles < 1 or args.clients < 1 or args.epoch < 1 or not (0 <= args.min_delay <= args.max_delay <= 60):
        ap.error("bad cycles, clients, epoch or delays")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("kill9: interrupted", flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
