"""
iotrace_lib — shared by the crash tests that run the REAL kvd binary under
the iotrace LD_PRELOAD shim (iotrace.c): start kvd with the shim, parse its
trace, replay the trace into a model of what a file system holds in memory
and on disk, build power-loss crash states from that model, drive a
workload whose every request and reply is positioned in the trace (a
ledger), and check a recovered store against the ledger.

Positions. The shim appends each event to the trace before the call
returns to kvd, so before kvd can send a reply that depends on it. A client
reads the trace's size just before sending a request (send_pos) and just
after the reply arrives (ack_pos). A crash "at event p" is a power cut just
before event p takes effect; it happened after every write acknowledged
with ack_pos <= start(p), and before any request sent with send_pos >
start(p) could reach the disk.

Binaries: $KVD_BIN (else build/test/kv/kvd), $KV_IOTRACE_LIB (else
build/test/tests/crash/iotrace.so), $KVFSCK_BIN (else build/test/fsck/kvfsck;
the kvfsck checks are skipped if there is none). Run the tests with
/usr/bin/python3 (Debian's redis-py).
"""
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

import redis  # noqa: E402

import kvdtest  # noqa: E402
from kvdtest import KvdServer, cmd, kvd_bin, raw_exchange  # noqa: E402,F401

SEG_RE = re.compile(r"^\d{10}\.seg$")


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def env_float(name, default):
    v = os.environ.get(name)
    return float(v) if v not in (None, "") else default


def shim_path():
    p = os.environ.get("KV_IOTRACE_LIB") or os.path.join(SRC, "build", "test", "tests", "crash", "iotrace.so")
    if not os.path.exists(p):
        raise unittest.SkipTest("iotrace shim not found at %s (build the kv_iotrace target, or set KV_IOTRACE_LIB)" % p)
    return p


def kvfsck_path():
    p = os.environ.get("KVFSCK_BIN") or os.path.join(SRC, "build", "test", "fsck", "kvfsck")
    return p if os.path.exists(p) else None


_asan_cache = {}


def asan_runtime(binary):
    """The path of the ASan runtime `binary` links (libasan.so.N), or None."""
    if binary not in _asan_cache:
        path = None
        try:
            out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=30).stdout
            for line in out.splitlines():
                m = re.match(r"\s*(libasan\.so\S*)\s*=>\s*(\S+)", line)
                if m:
                    path = m.group(2)
        except (OSError, subprocess.SubprocessError):
            pass
        _asan_cache[binary] = path
    return _asan_cache[binary]


def shim_env(datadir, trace=None, fail=None):
    """Environment for a kvd under the shim. Under an ASan kvd the ASan
    runtime is preloaded first, as ASan requires (its link-order check then
    passes, no verify_asan_link_order=0 needed), and the shim second:
    kvd's pwrite goes to ASan's interceptor, whose "real" pwrite is the
    shim's, which calls libc's."""
    libs = []
    asan = asan_runtime(kvd_bin())
    if asan:
        libs.append(asan)
    libs.append(shim_path())
    env = {"LD_PRELOAD": " ".join(libs), "KV_IOTRACE_DIR": os.path.abspath(datadir)}
    if trace:
        env["KV_IOTRACE_OUT"] = trace
    if fail:
        env["KV_IOTRACE_FAIL"] = fail
    return env


class TracedKvd(KvdServer):
    """A KvdServer whose process gets extra environment variables (the
    shim's). Everything else (free port, log, stop, cleanup, sanitizer
    check) is KvdServer's."""

    def __init__(self, extra=(), env_extra=None, **kw):
        super().__init__(extra, **kw)
        self.env_extra = dict(env_extra or {})

    def start(self, wait=True, port=None):
        # KvdServer.start takes its environment from kvdtest._env(); extend
        # it for this one start (servers are started from one thread).
        saved = kvdtest._env
        kvdtest._env = lambda: dict(saved(), **self.env_extra)
        try:
            return super().start(wait, port)
        finally:
            kvdtest._env = saved


def trace_size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def info(srv, section="persistence"):
    """INFO <section> as a dict of strings (parsed here, not by redis-py,
    so a reason with ',' or '=' stays one string)."""
    raw = raw_exchange(srv, cmd("INFO", section), 1, timeout=10)[0]
    out = {}
    for line in raw.decode(errors="replace").splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def run_kvfsck(datadir, json_out=False, timeout=60):
    """(exit status, stdout, stderr) of kvfsck on datadir, or None if there
    is no kvfsck binary."""
    b = kvfsck_path()
    if not b:
        return None
    argv = [b] + (["--json"] if json_out else []) + [datadir]
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    p = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    for m in kvdtest.SANITIZER_MARKERS:
        if m in out or m in err:
            raise AssertionError("sanitizer report from kvfsck on %s:\n%s" % (datadir, err[-4000:]))
    return p.returncode, out, err


# ---------------------------------------------------------------------------
# The trace
# ---------------------------------------------------------------------------

class Event:
    __slots__ = ("seq", "t", "tid", "op", "ret", "err", "inj", "f", "data", "start", "end")

    def __repr__(self):
        return "Event(#%d %s ret=%d err=%d inj=%d %s%s @%d)" % (
            self.seq, self.op, self.ret, self.err, self.inj, " ".join(self.f),
            "" if self.data is None else " +%dB" % len(self.data), self.start)


def _unescape(s):
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def parse_trace(path):
    """The events of a trace file, in order. An event cut short at the end
    of the file (the process died while logging it) is dropped."""
    with open(path, "rb") as f:
        buf = f.read()
    events = []
    pos, n = 0, len(buf)
    while pos < n:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            break
        start, line = pos, buf[pos:nl]
        pos = nl + 1
        if line.startswith(b"#"):
            continue
        parts = line.split(b" ")
        e = Event()
        e.seq, e.t, e.tid = int(parts[0]), int(parts[1]) / 1e9, int(parts[2])
        e.op = parts[3].decode()
        e.ret, e.err, e.inj = int(parts[4]), int(parts[5]), int(parts[6])
        e.f = [_unescape(p.decode()) for p in parts[7:]]
        e.data = None
        e.start = start
        if e.op == "write" and e.ret > 0:
            if pos + e.ret + 1 > n:
                break
            e.data = buf[pos:pos + e.ret]
            if buf[pos + e.ret:pos + e.ret + 1] != b"\n":
                raise ValueError("trace %s: bad write record at byte %d" % (path, start))
            pos += e.ret + 1
        e.end = pos
        events.append(e)
    return events


def is_sync(e):
    return e.op in ("fsync", "fdatasync") and e.ret == 0


def is_file_sync(e):
    return is_sync(e) and e.f[1] == "0"


# ---------------------------------------------------------------------------
# The file-system model
# ---------------------------------------------------------------------------

class ModelError(Exception):
    pass


class Inode:
    __slots__ = ("iid", "vol", "dur", "pending")

    def __init__(self, iid):
        self.iid = iid
        self.vol = bytearray()  # what the page cache holds
        self.dur = b""          # what is on disk: the content at the last sync
        self.pending = []       # ('w', off, data) / ('t', length) since then


def apply_ops(buf, ops):
    for op in ops:
        if op[0] == "w":
            _, off, data = op
            if len(buf) < off:
                buf.extend(bytes(off - len(buf)))
            buf[off:off + len(data)] = data
        else:
            ln = op[1]
            if len(buf) > ln:
                del buf[ln:]
            else:
                buf.extend(bytes(ln - len(buf)))


class Snapshot:
    """What a power cut just before one event leaves to choose from: the
    durable directory, the directory operations since its last sync, and
    per file the durable content and the operations since its last sync."""
    __slots__ = ("pos", "t", "index", "dnames", "dirops", "files")


class FsModel:
    """Replays a trace. Per file: the content in the page cache and the
    content on disk (as of its last successful fsync/fdatasync). Per
    directory: names in memory and names on disk (as of its last fsync).
    A failed call changes nothing (an injected write writes nothing; a
    failed sync makes nothing durable)."""

    def __init__(self):
        self.inodes = {}   # iid -> Inode
        self.by_ino = {}   # kernel inode number -> iid of the file it is now
        self.names = {}    # name -> iid, in memory
        self.dnames = {}   # name -> iid, on disk
        self.dirops = []   # ('create', name, iid) / ('rename', a, b) / ('unlink', name) since the last dir fsync
        self.dir_ino = None
        self.next_iid = 1

    def preload(self, files, inos):
        """Starts from an existing directory: files (name -> content) are
        in memory and on disk; inos maps each name to its inode number."""
        for name, data in files.items():
            iid = self.next_iid
            self.next_iid += 1
            ind = Inode(iid)
            ind.vol, ind.dur = bytearray(data), bytes(data)
            self.inodes[iid] = ind
            self.by_ino[inos[name]] = iid
            self.names[name] = self.dnames[name] = iid

    def _inode(self, ino):
        iid = self.by_ino.get(int(ino))
        if iid is None:
            raise ModelError("write/sync on inode %s that the trace never created (trace must start on an empty "
                             "directory)" % ino)
        return self.inodes[iid]

    def apply(self, e):
        if e.ret < 0:
            return
        op, f = e.op, e.f
        if op == "open":
            ino, created, trunc, isdir, name = int(f[0]), f[1] == "1", f[2] == "1", f[3] == "1", f[5]
            if isdir:
                if name == ".":
                    self.dir_ino = ino
                return
            if created:
                iid = self.next_iid
                self.next_iid += 1
                self.inodes[iid] = Inode(iid)
                self.by_ino[ino] = iid
                self.names[name] = iid
                self.dirops.append(("create", name, iid))
            elif ino not in self.by_ino:
                raise ModelError("open of %s, which existed before the trace began" % name)
            if trunc:
                ind = self._inode(ino)
                apply_ops(ind.vol, [("t", 0)])
                ind.pending.append(("t", 0))
        elif op == "write":
            ind = self._inode(f[0])
            w = ("w", int(f[1]), e.data or b"")
            apply_ops(ind.vol, [w])
            ind.pending.append(w)
        elif op in ("fsync", "fdatasync"):
            ino, isdir = int(f[0]), f[1] == "1"
            if isdir:
                if ino == self.dir_ino:
                    self.dnames = dict(self.names)
                    self.dirops = []
            else:
                ind = self._inode(ino)
                ind.dur = bytes(ind.vol)
                ind.pending = []
        elif op in ("ftruncate", "truncate"):
            ind = self._inode(f[0]) if op == "ftruncate" else self.inodes[self.names[f[1]]]
            t = ("t", int(f[1] if op == "ftruncate" else f[0]))
            apply_ops(ind.vol, [t])
            ind.pending.append(t)
        elif op == "rename":
            a, b = f
            if a.startswith("/"):
                raise ModelError("rename into the directory from outside: %s -> %s" % (a, b))
            iid = self.names.pop(a, None)
            if iid is None:
                raise ModelError("rename of unknown name %s" % a)
            if b.startswith("/"):
                self.dirops.append(("unlink", a))
            else:
                self.names[b] = iid
                self.dirops.append(("rename", a, b))
        elif op == "unlink":
            self.names.pop(f[0], None)
            self.dirops.append(("unlink", f[0]))
        # mkdir/rmdir of the directory itself: nothing to model

    def snapshot(self, e_index, e):
        s = Snapshot()
        s.index, s.pos, s.t = e_index, e.start if e else None, e.t if e else None
        s.dnames = dict(self.dnames)
        s.dirops = list(self.dirops)
        s.files = {}
        for iid in set(self.names.values()) | set(self.dnames.values()):
            ind = self.inodes[iid]
            s.files[iid] = (ind.dur, list(ind.pending))
        return s

    def volatile_files(self):
        """name -> content as the page cache holds it (what a kill -9
        leaves, and what the real directory holds after the run)."""
        return {n: bytes(self.inodes[i].vol) for n, i in self.names.items()}


def _dir_apply(names, ops):
    for op in ops:
        if op[0] == "create":
            names[op[1]] = op[2]
        elif op[0] == "rename":
            if op[1] in names:
                names[op[2]] = names.pop(op[1])
        else:
            names.pop(op[1], None)
    return names


def crash_content(dur, pending, mode, rng):
    """One file's content after a power cut. mode: 'drop' (only what was
    synced), 'keep' (everything written reached the disk), 'torn' (the
    operations since the sync reached the disk in order up to a sector
    boundary inside one write: 512- or 4096-byte units on absolute file
    offsets; the rest of that write's range is absent (file shorter), zeros
    or garbage), 'reorder' (each sector of the unsynced range independently
    new or old: what a disk that reorders writes leaves). Returns (bytes,
    description)."""
    buf = bytearray(dur)
    if not pending or mode == "drop":
        return bytes(buf), "drop"
    if mode == "keep":
        apply_ops(buf, pending)
        return bytes(buf), "keep"
    if mode == "torn":
        i = rng.randrange(len(pending))
        apply_ops(buf, pending[:i])
        op = pending[i]
        if op[0] == "t":
            if rng.random() < 0.5:
                apply_ops(buf, [op])
            return bytes(buf), "ops %d/%d, truncate %s" % (i, len(pending), "kept" if len(buf) == op[1] else "lost")
        _, off, data = op
        unit = rng.choice((512, 4096))
        end = off + len(data)
        cuts = [off] + list(range((off // unit + 1) * unit, end, unit))
        cut = rng.choice(cuts)
        apply_ops(buf, [("w", off, data[:cut - off])])
        fill = rng.choice(("short", "zero", "garbage"))
        if fill == "zero" and len(buf) < end:
            buf.extend(bytes(end - len(buf)))
        elif fill == "garbage":
            apply_ops(buf, [("w", cut, rng.randbytes(end - cut))])
        return bytes(buf), "ops %d/%d, write of %d at %d torn at %d (%d-byte units), rest %s" % (
            i, len(pending), len(data), off, cut, unit, fill)
    if mode == "reorder":
        new = bytearray(dur)
        apply_ops(new, pending)
        unit = rng.choice((512, 4096))
        lo = min(op[1] for op in pending if op[0] == "w") if any(op[0] == "w" for op in pending) else len(dur)
        out = bytearray(new)
        kept = lost = 0
        for s in range(lo // unit * unit, len(new), unit):
            if rng.random() < 0.5:
                old = dur[s:s + unit]
                seg = old + bytes(max(0, min(unit, len(new) - s) - len(old)))
                out[s:s + len(seg)] = seg[:min(unit, len(new) - s)]
                lost += 1
            else:
                kept += 1
        return bytes(out), "reorder: %d sectors of %d bytes new, %d old" % (kept, unit, lost)
    raise ValueError(mode)


def materialise(snap, mode, dirmode, rng):
    """name -> content for one crash state. dirmode: 'drop' (only synced
    directory entries), 'keep' (every create/rename/unlink), 'prefix' (the
    operations since the last directory fsync, in order, up to a random
    point)."""
    k = {"drop": 0, "keep": len(snap.dirops)}.get(dirmode)
    if k is None:
        k = rng.randint(0, len(snap.dirops))
    names = _dir_apply(dict(snap.dnames), snap.dirops[:k])
    files, notes = {}, []
    for name in sorted(names):
        dur, pending = snap.files[names[name]]
        data, note = crash_content(dur, pending, mode, rng)
        files[name] = data
        if pending:
            notes.append("%s: %s" % (name, note))
    desc = "dir %s (%d/%d ops); %s" % (dirmode, k, len(snap.dirops), "; ".join(notes) or "no unsynced data")
    return files, desc


def state_digest(files):
    h = hashlib.sha256()
    for n in sorted(files):
        h.update(n.encode() + b"\0" + len(files[n]).to_bytes(8, "little") + files[n])
    return h.hexdigest()


def write_state(files, d):
    os.makedirs(d, exist_ok=True)
    for n, data in files.items():
        with open(os.path.join(d, n), "wb") as f:
            f.write(data)


def compare_with_disk(model_files, datadir):
    """Differences between the model's page-cache view and the real files
    (after kvd exited): a check that the shim saw every mutation."""
    diffs = []
    real = sorted(os.listdir(datadir))
    if sorted(model_files) != real:
        diffs.append("names: model %s, disk %s" % (sorted(model_files), real))
    for n in sorted(set(model_files) & set(real)):
        with open(os.path.join(datadir, n), "rb") as f:
            d = f.read()
        if d != model_files[n]:
            at = next((i for i in range(min(len(d), len(model_files[n]))) if d[i] != model_files[n][i]),
                      min(len(d), len(model_files[n])))
            diffs.append("%s: model %d bytes, disk %d bytes, first difference at %d" %
                         (n, len(model_files[n]), len(d), at))
    return diffs


# ---------------------------------------------------------------------------
# The workload and its ledger
# ---------------------------------------------------------------------------

class Op:
    __slots__ = ("id", "client", "kind", "effects", "send_pos", "ack_pos", "send_t", "ack_t", "error")

    def __init__(self, oid, client, kind, effects):
        self.id, self.client, self.kind, self.effects = oid, client, kind, effects
        self.send_pos = self.ack_pos = self.send_t = self.ack_t = None
        self.error = None

    def keys(self):
        return [k for k, _ in self.effects]

    def __repr__(self):
        return "op %d (client %d, %s %s, sent @%s, %s)" % (
            self.id, self.client, self.kind, ",".join(k.decode() for k in self.keys()), self.send_pos,
            "acked @%s" % self.ack_pos if self.ack_pos is not None else "error %r" % self.error)


class Ledger:
    def __init__(self, first_id=1):
        self.ops = []
        self.lock = threading.Lock()
        self.next_id = first_id

    def new_id(self):
        with self.lock:
            i = self.next_id
            self.next_id += 1
            return i

    def add(self, op):
        with self.lock:
            self.ops.append(op)

    def histories(self):
        return histories(self.ops)


def histories(ops):
    """key -> [(op, value after it)] in the order the key's only writer
    (one client per key) sent them. value None = absent."""
    h = {}
    for op in sorted(ops, key=lambda o: o.id):
        for k, v in op.effects:
            h.setdefault(k, []).append((op, v))
    return h


def value_for(cid, oid, rng):
    r = rng.random()
    if r < 0.85:
        n = rng.randint(0, 300)
    elif r < 0.97:
        n = rng.randint(500, 3000)
    else:
        n = rng.randint(4100, 9000)  # crosses 4096-byte boundaries
    head = b"c%d.o%d." % (cid, oid)
    return head + (b"abcdefghijklmnopqrstuvwxyz0123456789" * (n // 36 + 1))[:n]


class Client(threading.Thread):
    """One connection issuing a random mix of SET, DEL, MSET, INCR and
    MULTI/EXEC on keys only it writes (c<id>:k<j> and counters c<id>:n<j>),
    one request at a time, recording each in the ledger with its trace
    positions. Stops after `nops` requests or at `deadline`, or at the
    first error if stop_on_error (fault tests); else an error is fatal."""

    NKEYS = 6
    NCOUNTERS = 2

    def __init__(self, cid, srv, trace, ledger, seed, nops=None, deadline=None, stop_on_error=False,
                 mix=None, after_error=0):
        super().__init__(daemon=True)
        self.cid, self.srv, self.trace, self.ledger = cid, srv, trace, ledger
        self.rng = random.Random(seed)
        self.nops, self.deadline, self.stop_on_error = nops, deadline, stop_on_error
        self.after_error = after_error  # requests still sent after the first error
        self.mix = mix or (("set", 40), ("del", 8), ("mset", 20), ("incr", 17), ("multi", 15))
        self.failure = None
        self.errors = []
        self.cur = {}  # key -> value as this client believes the store holds it (None absent)

    def key(self, j):
        return b"c%d:k%d" % (self.cid, j)

    def counter(self, j):
        return b"c%d:n%d" % (self.cid, j)

    def _pick(self):
        tot = sum(w for _, w in self.mix)
        x = self.rng.uniform(0, tot)
        for k, w in self.mix:
            x -= w
            if x <= 0:
                return k
        return self.mix[-1][0]

    def _counter_next(self, k, by=1):
        v = self.cur.get(k)
        return str((int(v) if v is not None else 0) + by).encode()

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by the test
            self.failure = "client %d: %s: %s" % (self.cid, type(e).__name__, e)

    def _run(self):
        r = self.srv.client(socket_timeout=60)
        n = 0
        left_after_error = None
        try:
            while True:
                if self.nops is not None and n >= self.nops:
                    break
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    break
                if left_after_error is not None:
                    if left_after_error <= 0:
                        break
                    left_after_error -= 1
                n += 1
                kind = self._pick()
                oid = self.ledger.new_id()
                rng = self.rng
                if kind == "set":
                    k = self.key(rng.randrange(self.NKEYS))
                    v = value_for(self.cid, oid, rng)
                    effects, fn, expect = [(k, v)], (lambda k=k, v=v: r.set(k, v)), True
                elif kind == "del":
                    k = self.key(rng.randrange(self.NKEYS))
                    expect = 1 if self.cur.get(k) is not None else 0
                    effects, fn = [(k, None)], (lambda k=k: r.delete(k))
                elif kind == "mset":
                    ks = rng.sample(range(self.NKEYS), rng.randint(2, 4))
                    m = {self.key(j): value_for(self.cid, oid, rng) + b".%d" % j for j in ks}
                    effects, fn, expect = list(m.items()), (lambda m=m: r.mset(m)), True
                elif kind == "incr":
                    k = self.counter(rng.randrange(self.NCOUNTERS))
                    by = rng.choice((1, 1, 1, 7))
                    nv = self._counter_next(k, by)
                    effects, fn, expect = [(k, nv)], (lambda k=k, by=by: r.incrby(k, by)), int(nv)
                else:  # multi: SET, INCR, SET in one transaction
                    j1, j2 = rng.sample(range(self.NKEYS), 2)
                    k1, k2 = self.key(j1), self.key(j2)
                    kc = self.counter(rng.randrange(self.NCOUNTERS))
                    v1, v2 = value_for(self.cid, oid, rng) + b".a", value_for(self.cid, oid, rng) + b".b"
                    nv = self._counter_next(kc)
                    effects = [(k1, v1), (kc, nv), (k2, v2)]

                    def fn(k1=k1, k2=k2, kc=kc, v1=v1, v2=v2):
                        with r.pipeline(transaction=True) as p:
                            p.set(k1, v1).incr(kc).set(k2, v2)
                            return p.execute()
                    expect = [True, int(nv), True]
                op = Op(oid, self.cid, kind, effects)
                op.send_pos = trace_size(self.trace)
                op.send_t = time.monotonic()
                try:
                    reply = fn()
                except redis.ResponseError as e:
                    op.error = str(e)
                except (redis.ConnectionError, redis.TimeoutError) as e:
                    op.error = "connection: %s" % e
                    self.ledger.add(op)
                    self.errors.append(op)
                    if not self.stop_on_error:
                        raise
                    break
                else:
                    op.ack_pos = trace_size(self.trace)
                    op.ack_t = time.monotonic()
                    if reply != expect:
                        raise AssertionError("%s: reply %r, expected %r" % (kind, reply, expect))
                    for k, v in effects:
                        self.cur[k] = v
                self.ledger.add(op)
                if op.error is not None:
                    self.errors.append(op)
                    if not self.stop_on_error:
                        raise AssertionError("%s answered %r" % (kind, op.error))
                    if left_after_error is None:
                        left_after_error = self.after_error
        finally:
            r.close()


def run_workload(srv, trace, ledger, nclients, seed, nops=None, duration=None, stop_on_error=False,
                 after_error=0, mix=None, cid_base=0):
    deadline = time.monotonic() + duration if duration else None
    cl = [Client(c, srv, trace, ledger, seed * 1000 + c, nops=nops, deadline=deadline,
                 stop_on_error=stop_on_error, after_error=after_error, mix=mix)
          for c in range(cid_base, cid_base + nclients)]
    for c in cl:
        c.start()
    for c in cl:
        c.join(timeout=600)
        if c.is_alive():
            raise AssertionError("client %d did not finish" % c.cid)
    fails = [c.failure for c in cl if c.failure]
    if fails:
        raise AssertionError("workload failed: " + "; ".join(fails))
    return cl


# ---------------------------------------------------------------------------
# Checking a recovered store against the ledger
# ---------------------------------------------------------------------------

def read_store(srv):
    r = srv.client(socket_timeout=30)
    try:
        keys = sorted(set(r.scan_iter(count=1000)))
        out = {}
        for i in range(0, len(keys), 200):
            chunk = keys[i:i + 200]
            for k, v in zip(chunk, r.mget(chunk)):
                out[k] = v
        return out
    finally:
        r.close()


class Verdict:
    def __init__(self):
        self.problems = []
        self.lost = []         # acknowledged ops certainly not in the recovered state
        self.required = 0      # acknowledged ops before the crash point
        self.applied = 0       # ops certainly in the recovered state


def check_recovered(store, hist, ops, crash_pos, require_acked=True):
    """Checks a recovered store (key -> value) against the ledger for a
    crash at trace position crash_pos:
      - every key is one the workload wrote; every value is one that was
        sent for that key before the crash (or absent): nothing invented;
      - require_acked: the value is that of the last write acknowledged
        before the crash, or of a later one sent before the crash;
      - MSET and MULTI/EXEC: all of their keys or none;
      - order: if an op is in the store, every op acknowledged before it
        was sent is too (the log is a prefix).
    Without require_acked (everysec, no) the acknowledged writes lost are
    counted instead (Verdict.lost)."""
    v = Verdict()
    for k in store:
        if k not in hist:
            v.problems.append("key %r was never written" % k)
    rng_of = {}  # key -> (lo, hi) index of the recovered value in the history (0 = before any op)
    for k, h in hist.items():
        vals = [None] + [val for _, val in h]
        j = m = 0
        for i, (op, _) in enumerate(h, 1):
            if op.ack_pos is not None and op.ack_pos <= crash_pos:
                j = i
            if op.send_pos <= crash_pos:
                m = i
        got = store.get(k)
        lo_allowed = j if require_acked else 0
        cands = [i for i in range(lo_allowed, m + 1) if vals[i] == got]
        if not cands:
            older = [i for i in range(0, lo_allowed) if vals[i] == got]
            if older:
                v.problems.append("LOST ACKNOWLEDGED WRITE: key %r holds the value of %s, but %s was acknowledged "
                                  "before the crash" % (k, h[older[-1] - 1][0] if older[-1] else "nothing (absent)",
                                                        h[j - 1][0]))
            else:
                v.problems.append("key %r holds a value that was never sent before the crash: %r" %
                                  (k, (got or b"")[:60]))
            continue
        rng_of[k] = (min(cands), max(cands))
    # per op: certainly applied / certainly not applied
    idx = {}
    for k, h in hist.items():
        for i, (op, _) in enumerate(h, 1):
            idx[(op.id, k)] = i  # a key written twice by one op: the last
    applied, notapplied = [], []
    for op in ops:
        if op.send_pos > crash_pos or not op.effects:
            continue
        yes = no = False
        for k in set(op.keys()):
            if k not in rng_of:
                continue
            lo, hi = rng_of[k]
            i = idx[(op.id, k)]
            if lo >= i:
                yes = True
            if hi < i:
                no = True
        if yes and no:
            v.problems.append("BATCH NOT ATOMIC: %s is in the store for some of its keys and not for others" % op)
        if yes and not no:
            applied.append(op)
        elif no and not yes:
            notapplied.append(op)
    v.applied = len(applied)
    acked = [op for op in ops if op.ack_pos is not None and op.ack_pos <= crash_pos]
    v.required = len(acked)
    v.lost = [op for op in notapplied if op.ack_pos is not None and op.ack_pos <= crash_pos]
    if applied and v.lost:
        first_lost = min(v.lost, key=lambda o: o.ack_pos)
        last_applied = max(applied, key=lambda o: o.send_pos)
        if first_lost.ack_pos <= last_applied.send_pos:
            v.problems.append("ORDER: %s is in the store, but %s, acknowledged before it was sent, is not" %
                              (last_applied, first_lost))
    if require_acked and v.lost:
        v.problems.append("LOST ACKNOWLEDGED WRITES: %s" % v.lost[:5])
    return v


class StateRunner:
    """Starts the real kvd (no shim, default recovery mode) on crash states
    and checks them. Keeps a failing state for reproduction."""

    def __init__(self, base, extra=()):
        self.base = base
        self.extra = list(extra)
        self.n = 0
        self.kvfsck_runs = 0
        self.torn_cut = 0
        self.keep_dir = os.environ.get("KV_CRASH_KEEP_DIR") or os.path.join(tempfile.gettempdir(), "kvd-crash-failures")

    def keep(self, files, desc, why):
        os.makedirs(self.keep_dir, exist_ok=True)
        d = tempfile.mkdtemp(prefix="state-", dir=self.keep_dir)
        write_state(files, os.path.join(d, "data"))
        with open(os.path.join(d, "README.txt"), "w") as f:
            f.write("crash state: %s\nproblem: %s\nreproduce: kvd --dir %s/data\n" % (desc, why, d))
        return d

    def run(self, files, desc, check, allow_refusal=False):
        """Materialises files, runs kvd on them, calls check(store) ->
        list of problems; returns (problems, store, srv_info). With
        allow_refusal, a start refused because of corruption (kvd's
        documented refusal) returns (["refused"], None, {})."""
        self.n += 1
        work = tempfile.mkdtemp(prefix="st%d-" % self.n, dir=self.base)
        data = os.path.join(work, "data")
        write_state(files, data)
        problems = []
        pre = run_kvfsck(data, json_out=True)
        pre_live = None
        if pre is not None:
            self.kvfsck_runs += 1
            rc, out, err = pre
            if rc not in (0, 4):
                problems.append("kvfsck before recovery exited %d: %s" % (rc, (out + err)[-2000:]))
            else:
                try:
                    pre_live = json.loads(out)["summary"]["live_keys"]
                except (ValueError, KeyError, TypeError):
                    problems.append("kvfsck --json output unreadable: %r" % out[:300])
        srv = KvdServer(self.extra, datadir=data, workdir=work)
        store, inf = None, {}
        try:
            try:
                srv.start()
            except AssertionError as e:
                text = srv.read_log() + srv.read_stderr()
                if allow_refusal and "cannot open data directory" in text and "Inspect with: kvfsck" in text:
                    return ["refused"], None, {}
                problems.append("kvd did not start on the crash state: %s" % str(e)[-3000:])
            else:
                store = read_store(srv)
                inf = info(srv)
                self.torn_cut += int(inf.get("recovery_torn_bytes_cut", "0"))
                problems += check(store)
                if pre_live is not None and pre_live != len(store):
                    problems.append("kvfsck counted %d live keys before recovery, kvd serves %d" %
                                    (pre_live, len(store)))
                rc = srv.stop()
                if rc != 0:
                    problems.append("kvd exited %r on SIGTERM" % rc)
            rep = srv.sanitizer_reports()
            if rep:
                problems.append("sanitizer report from kvd: %s\n%s" % (rep, srv.read_stderr()[-4000:]))
            if store is not None:
                post = run_kvfsck(data)
                if post is not None:
                    self.kvfsck_runs += 1
                    if post[0] != 0:
                        problems.append("kvfsck after kvd's recovery exited %d:\n%s" % (post[0], post[1][-2000:]))
            if problems:
                kept = self.keep(files, desc, problems[0])
                problems = ["state [%s] kept in %s (kvd log: %s)" % (desc, kept, srv.read_log()[-1500:])] + problems
        finally:
            srv.cleanup()
            shutil.rmtree(work, ignore_errors=True)
        return problems, store, inf


def choose(rng, items, k, always=()):
    """Up to k of items: those in `always` first, then a seeded sample."""
    items = list(items)
    chosen = [x for x in always if x in items]
    rest = [x for x in items if x not in chosen]
    k = max(0, k - len(chosen))
    chosen += rng.sample(rest, min(k, len(rest)))
    return sorted(set(chosen))


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
