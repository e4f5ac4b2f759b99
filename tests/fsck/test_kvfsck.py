"""
kvfsck against data directories written by a real kvd (127.0.0.1 only) and
then damaged, one named test per corruption shape, plus the repairs, the
lock, --json and the exit codes.

The base directories are format 2 (docs/format.md, kv/base/kv_record.h): kvd
stopped cleanly (its data in sealed segments that end with a trailer and
have hint files, then an empty newest segment) or killed with kill -9 (the
newest segment holds the records, each group followed by its commit mark).
Version 1 segments are built by hand where a test checks the old rules.
For every shape the test also checks kvfsck's verdict on kvd (it starts or
refuses, and why) and, for most, that a real kvd does exactly that;
TestAgreement does so for every shape of this file.

The binaries come from $KVD_BIN and $KVFSCK_BIN (CTest sets both), else
from build/test. Run by hand from this directory:
    /usr/bin/python3 -m unittest -v test_kvfsck
    /usr/bin/python3 -m unittest -v test_kvfsck.TestShapes.test_zero_filled_tail_is_unwritten_space_not_a_problem

The base directories are written once per class by kvd and copied for each
test; every kvd started is stopped (KvdServer.cleanup), and every kvfsck
run is bounded in time and checked for sanitizer reports.
"""
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

import redis  # noqa: E402

from kvdtest import KvdServer, SANITIZER_MARKERS  # noqa: E402

SEG1 = "0000000001.seg"
REC_HDR = 44

# Exit codes (kvfsck --help).
CLEAN, REPAIRED, LEFT, OPERROR, USAGE = 0, 1, 4, 8, 16


def kvfsck_bin():
    b = os.environ.get("KVFSCK_BIN") or os.path.join(SRC, "build", "test", "fsck", "kvfsck")
    if not os.path.exists(b):
        raise unittest.SkipTest("kvfsck binary not found at %s (set KVFSCK_BIN)" % b)
    return b


def env():
    e = dict(os.environ)
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return e


class Result:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    def __repr__(self):
        return "exit %r\n--- stdout\n%s\n--- stderr\n%s" % (self.rc, self.out, self.err)


def kvfsck(*args, stdin=subprocess.DEVNULL, timeout=120):
    p = subprocess.run([kvfsck_bin()] + list(args), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env(), timeout=timeout)
    r = Result(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
    for m in SANITIZER_MARKERS:
        assert m not in r.err, "sanitizer report from kvfsck:\n%r" % r
    return r


# ---- the format, as docs/format.md and kv/base/kv_record.h specify it ----

PUT, TOMBSTONE, BATCH, COMMIT, SEAL = 1, 2, 3, 4, 5  # record types; 4, 5: format 2's marks
DATA_TYPES = (PUT, TOMBSTONE, BATCH)


def seg_name(i):
    return "%010d.seg" % i


def hint_name(i):
    return "%010d.hint" % i


def seg_header(seg_id, created=1700000000000):
    """A version 1 segment header (the old format, still read under the
    version 1 rules)."""
    h = b"KVDS" + struct.pack("<HHIIQI", 1, 32, seg_id, 0, created, 0)
    return h + struct.pack("<I", zlib.crc32(h))


def seg_header_v2(seg_id, prev_id, prev_end, created_s, replaces=0, version=2):
    """A version 2 segment header: bytes 16..27 are the predecessor's id,
    its size when this one was created, and the creation time in seconds."""
    h = b"KVDS" + struct.pack("<HHIIIII", version, 32, seg_id, replaces, prev_id, prev_end, created_s)
    return h + struct.pack("<I", zlib.crc32(h))


def parse_header(data):
    """The fields of a segment header (either version), without checks."""
    magic, version, hsize, seg_id, replaces = struct.unpack_from("<4sHHII", data, 0)
    h = {"version": version, "id": seg_id, "replaces": replaces,
         "crc_ok": struct.unpack_from("<I", data, 28)[0] == zlib.crc32(data[:28])}
    if version >= 2:
        h["prev_id"], h["prev_end"], h["created_s"] = struct.unpack_from("<III", data, 16)
    return h


def mark(typ, seq, offset, count):
    """A commit mark (COMMIT: offset = the group's start, count = its
    records) or a trailer (SEAL: offset = its own offset, count = the
    segment's data records): a 44-byte record with no key and no value."""
    body = struct.pack("<IBBHIIQQI", 44, typ, 0, 0, 0, 0, seq, offset, count)
    hcrc = struct.pack("<I", zlib.crc32(body))
    return struct.pack("<I", zlib.crc32(hcrc + body)) + hcrc + body


def records(data):
    """[(offset, length, type, seq)] of a clean segment's records, commit
    marks and trailer included; zero bytes at the end (space preallocated
    ahead of the log) end the list."""
    out, pos = [], 32
    while pos + REC_HDR <= len(data):
        ln, typ = struct.unpack_from("<IB", data, pos + 8)
        if ln == 0 and not any(data[pos:]):
            return out
        seq = struct.unpack_from("<Q", data, pos + 24)[0]
        out.append((pos, ln, typ, seq))
        pos += ln
    assert pos == len(data) or not any(data[pos:]), "not a clean segment"
    return out


def data_records(data):
    """records() without the marks: puts, tombstones and batches."""
    return [r for r in records(data) if r[2] in DATA_TYPES]


def record_key(data, off):
    """The key of the put or tombstone at off."""
    klen = struct.unpack_from("<I", data, off + 16)[0]
    return data[off + REC_HDR:off + REC_HDR + klen]


def v1_segment(seg_id, data):
    """Segment seg_id in format 1, built by hand from the data records of
    the format 2 segment `data` (its marks and trailer left out)."""
    return seg_header(seg_id) + b"".join(data[o:o + ln] for o, ln, _, _ in data_records(data))


def snapshot(d):
    """Every file of a directory with its bytes: compared before and after
    a run that must change nothing."""
    snap = {}
    for n in sorted(os.listdir(d)):
        with open(os.path.join(d, n), "rb") as f:
            snap[n] = f.read()
    return snap


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


PROBLEM_RE = re.compile(r"^(?P<path>\S+): offset (?P<offset>\d+), length (?P<length>\d+): "
                        r"(?P<kind>torn tail|mid-log corruption|sealed-segment corruption|sequence going back|bad hint file|"
                        r"missing data): "
                        r"(?P<reason>.+?)(?P<after> \(valid records follow\))?$")


def text_problems(out):
    """The problem lines of a text report, up to the summary (or up to
    'after repair:'), as dicts."""
    ps = []
    for line in out.splitlines():
        if line.startswith("after repair:"):
            break
        m = PROBLEM_RE.match(line)
        if m:
            ps.append(m.groupdict())
    return ps


def text_field(out, name):
    """The number of a summary line, e.g. 'live keys:    5' -> 5."""
    m = re.search(r"^%s:\s+(\d+)" % re.escape(name), out, re.M)
    assert m, "no %r in:\n%s" % (name, out)
    return int(m.group(1))


# ---- base directories written by kvd ----

def build_dir(workdir, name, fill, extra=(), crash=False):
    """Runs kvd on <workdir>/<name>, calls fill(redis client), then stops
    kvd: cleanly (SIGTERM: the active segment is sealed with a trailer, an
    empty next segment created and the hint files written), or with
    crash=True by kill -9 (the newest segment keeps its records, their
    commit marks and any preallocated zeros). Returns the data directory."""
    d = os.path.join(workdir, name)
    srv = KvdServer(list(extra), datadir=d, workdir=os.path.join(workdir, name + "-kvd"))
    os.makedirs(srv.workdir)
    try:
        srv.start()
        c = srv.client()
        fill(c)
        # Sealed segments get their hint files in the background: wait for
        # them, so that every base directory is complete and the same.
        deadline = time.monotonic() + 20
        while c.info("persistence")["hint_files_pending"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.info("persistence")["hint_files_pending"] == 0, "hint files not written"
        c.close()
        if crash:
            srv.kill9()
        else:
            rc = srv.stop()
            assert rc == 0, "kvd exited %r" % rc
        reports = srv.sanitizer_reports()
        assert not reports, "sanitizer report in kvd: %s\n%s" % (reports, srv.read_log())
    finally:
        srv.cleanup()
    return d


def fill_five(c):
    for i in range(1, 6):
        c.set("k%d" % i, "v%d" % i)


def fill_batch(c):
    c.set("k1", "v1")
    c.set("k2", "v2")
    c.mset({"k3": "v3", "k4": "v4", "k5": "v5"})


def fill_multi(c):
    for i in range(120):
        c.set("key:%03d" % i, "x" * 60)


def fill_multi_other(c):
    # the same keys, longer values: another log, other segment sizes
    for i in range(120):
        c.set("key:%03d" % i, "y" * 61)


MULTI_VALUE = b"x" * 60


def fill_mixed(c):
    for i in range(10):
        c.set("k%d" % i, "v%d" % i)           # 10 records
    c.delete("k0")                            # 1 record, 1 tombstone
    c.delete("k1", "k2")                      # 1 batch, 2 tombstones
    c.mset({"m1": "a", "m2": "b", "k3": "c"})  # 1 batch, 3 puts
    c.set("gone", "soon", px=1)               # 1 record, expired at check time
    c.set("later", "x", ex=100000)            # 1 record with a far expiry
    time.sleep(0.01)


# Base directories: name -> (fill, kvd flags[, crash]).
FIVE = (fill_five, ())                                   # clean stop: 1.seg sealed + 1.hint, 2.seg empty
CRASH = (fill_five, ("--preallocate", "no"), True)       # kill -9: 1.seg newest, records + marks, no zeros
CRASH_PREALLOC = (fill_five, (), True)                   # kill -9: the same, then preallocated zeros
BATCH_CRASH = (fill_batch, ("--preallocate", "no"), True)
MULTI = (fill_multi, ("--segment-size", "4kb"))          # clean stop: 1..5.seg sealed + hints, 6.seg empty
MULTI_OTHER = (fill_multi_other, ("--segment-size", "4kb"))
MIXED = (fill_mixed, ())

# The five-put layouts: each put is 48 bytes, each commit mark 44.
PUT5 = [32 + 92 * i for i in range(5)]  # 32, 124, 216, 308, 400
CRASH_END = 492                          # end of the last commit mark
FIVE_SEG1 = 536                          # ... and of the trailer after a clean stop


class Base(unittest.TestCase):
    # name -> base spec; built once per class
    BASES = {"five": FIVE}

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="kvfscktest-")
        cls.base = {}
        try:
            for name, spec in cls.BASES.items():
                cls.base[name] = build_dir(cls.work, name, *spec)
        except BaseException:
            shutil.rmtree(cls.work, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="case-", dir=self.work)
        self._servers = []

    def tearDown(self):
        for s in self._servers:
            s.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def copy(self, name="five", to="data"):
        d = os.path.join(self.tmp, to)
        shutil.copytree(self.base[name], d)
        return d

    def start_kvd(self, d, extra=()):
        s = KvdServer(list(extra), datadir=d, workdir=tempfile.mkdtemp(prefix="kvd-", dir=self.tmp))
        self._servers.append(s)
        s.start()
        return s

    def stop_kvd(self, s):
        self.assertEqual(s.stop(), 0)
        self.assertEqual(s.sanitizer_reports(), [], s.read_log())

    def try_kvd(self, d):
        """Starts a real kvd on d. Returns (server, None, log) if it
        starts, (None, exit status, log) if it refuses (exits)."""
        s = KvdServer([], datadir=d, workdir=tempfile.mkdtemp(prefix="kvd-", dir=self.tmp))
        self._servers.append(s)
        try:
            s.start()
        except AssertionError:
            log = s.read_log() + s.read_stderr()
            self.assertEqual(s.sanitizer_reports(), [], log)
            return None, s.returncode, log
        return s, None, s.read_log()

    def kvd_json(self, d):
        r = kvfsck("--json", d)
        self.assertIn(r.rc, (CLEAN, LEFT), r)
        return json.loads(r.out)["summary"]["kvd"]

    def expect_kvd_refuses(self, d, names):
        """A real kvd refuses to start on d (exit status not 0), its log
        names d/<each of names> and kvfsck, and no file of d changed."""
        before = snapshot(d)
        s, rc, log = self.try_kvd(d)
        self.assertIsNone(s, "kvd started on %s" % d)
        self.assertNotEqual(rc, 0, log)
        for n in names:
            self.assertIn(os.path.join(d, n), log)
        self.assertIn("kvfsck " + d, log)
        self.assertEqual(snapshot(d), before, "a refused start changed the directory")
        return log

    def expect_kvd_serves(self, d, want, errors=()):
        """A real kvd starts on d and answers every key of want (key ->
        value) with its value and every key in errors with an error, never
        with data; DBSIZE counts them all."""
        s, rc, log = self.try_kvd(d)
        self.assertIsNotNone(s, "kvd refused (exit %r):\n%s" % (rc, log[-3000:]))
        c = s.client()
        try:
            for k, v in want.items():
                self.assertEqual(c.get(k), v, k)
            for k in errors:
                with self.assertRaises(redis.exceptions.ResponseError, msg=k):
                    c.get(k)
            self.assertEqual(c.dbsize(), len([v for v in want.values() if v is not None]) + len(errors))
        finally:
            c.close()
        self.stop_kvd(s)
        return s

    def expect_problems(self, d, want, starts=None):
        """A check that finds exactly the problems in want, as a list of
        (file, offset, length, kind, reason) in report order (length and
        reason None: not compared; reason: a substring), changes nothing
        and exits 4; with starts, kvd's verdict in --json is that."""
        before = snapshot(d)
        r = kvfsck(d)
        self.assertEqual(r.rc, LEFT, r)
        got = [(os.path.relpath(p["path"], d), int(p["offset"]), int(p["length"]), p["kind"], p["reason"])
               for p in text_problems(r.out)]
        self.assertEqual(len(got), len(want), r)
        for g, w in zip(got, want):
            self.assertEqual(g[:2], w[:2], r)
            if w[2] is not None:
                self.assertEqual(g[2], w[2], r)
            self.assertEqual(g[3], w[3], r)
            if w[4]:
                self.assertIn(w[4], g[4], r)
        self.assertEqual(text_field(r.out, "problems"), len(want))
        if starts is not None:
            self.assertEqual(self.kvd_json(d)["starts"], starts, r)
            if starts:
                self.assertRegex(r.out, r"(?m)^kvd starts on this directory")
            else:
                self.assertRegex(r.out, r"(?m)^kvd refuses to start on this directory in its default recovery mode:\n  \S")
        self.assertEqual(snapshot(d), before, "a read-only check changed the directory")
        return r

    # A check that must find exactly one problem, change nothing, exit 4.
    def expect_one_problem(self, d, seg, offset, length, kind, reason=None, starts=None):
        return self.expect_problems(d, [(seg, offset, length, kind, reason)], starts)


class TestClean(Base):
    BASES = {"five": FIVE, "crash": CRASH, "mixed": MIXED, "multi": MULTI}

    def test_clean_directory_exits_0_with_right_counts(self):
        d = self.copy("mixed")
        before = snapshot(d)
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertIn("result: clean", r.out)
        self.assertEqual(text_problems(r.out), [])
        # the clean stop sealed segment 1 and began an empty segment 2
        self.assertEqual(text_field(r.out, "segments"), 2)
        self.assertIn("(newest 0000000002.seg)", r.out)
        self.assertEqual(text_field(r.out, "records"), 15)  # 10 + 1 + 1 + 1 + 1 + 1
        self.assertEqual(text_field(r.out, "tombstones"), 3)
        self.assertEqual(text_field(r.out, "expired"), 1)
        # k3..k9 (7), m1, m2, later; k0..k2 deleted, gone expired
        self.assertEqual(text_field(r.out, "live keys"), 10)
        self.assertRegex(r.out, r"records:\s+15 \(2 batches; 18 entries")
        log = text_field(r.out, "log bytes")
        self.assertEqual(log, os.path.getsize(os.path.join(d, SEG1)) + 32)
        self.assertEqual(os.path.getsize(os.path.join(d, seg_name(2))), 32)
        # marks and the trailer are dead bytes, as are the two headers
        self.assertEqual(text_field(r.out, "dead bytes"), log - text_field(r.out, "live bytes") - 2 * 32)
        self.assertRegex(r.out, r"hint files:\s+1 \(1 valid, 0 bad, 0 not checked, 0 without a segment\); 0 sealed segments without one")
        self.assertRegex(r.out, r"LOCK:\s+present")
        kvd = self.kvd_json(d)
        self.assertEqual(kvd, {"starts": True, "torn_bytes_cut": 0, "segments_from_hints": 1,
                               "rotations_completed": 0, "message": None})
        self.assertEqual(snapshot(d), before)

    def test_crash_directory_is_clean(self):
        # kill -9 after five acknowledged SETs: one segment, not sealed
        d = self.copy("crash")
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertEqual(text_field(r.out, "segments"), 1)
        self.assertEqual(text_field(r.out, "records"), 5)
        self.assertEqual(text_field(r.out, "live keys"), 5)
        self.assertEqual(text_field(r.out, "log bytes"), CRASH_END)
        self.assertRegex(r.out, r"hint files:\s+0 \(0 valid, 0 bad, 0 not checked, 0 without a segment\); 0 sealed segments without one")
        self.assertTrue(self.kvd_json(d)["starts"])

    def test_clean_multi_segment_directory(self):
        d = self.copy("multi")
        segs = sorted(n for n in os.listdir(d) if n.endswith(".seg"))
        self.assertGreater(len(segs), 2)
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertEqual(text_field(r.out, "segments"), len(segs))
        self.assertEqual(text_field(r.out, "records"), 120)
        self.assertEqual(text_field(r.out, "live keys"), 120)
        self.assertEqual(text_field(r.out, "log bytes"), sum(os.path.getsize(os.path.join(d, n)) for n in segs))
        self.assertEqual(self.kvd_json(d)["segments_from_hints"], len(segs) - 1)

    def test_check_never_creates_the_lock_file(self):
        d = self.copy()
        os.unlink(os.path.join(d, "LOCK"))
        before = snapshot(d)
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertRegex(r.out, r"LOCK:\s+absent")
        self.assertEqual(snapshot(d), before)

    def test_check_runs_beside_a_running_kvd(self):
        d = self.copy()
        s = self.start_kvd(d)
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertEqual(text_field(r.out, "live keys"), 5)
        self.stop_kvd(s)

    def test_other_files_are_listed(self):
        d = self.copy()
        write(os.path.join(d, SEG1 + ".272.torn"), b"\0" * 7)
        write(os.path.join(d, SEG1 + ".272.torn.1"), b"\0" * 3)
        write(os.path.join(d, "0000000002.seg.discarded"), seg_header(2))
        write(os.path.join(d, "notes.txt"), b"hello")
        write(os.path.join(d, "replication.state"), b"replid 0\n")
        write(os.path.join(d, "diverged.201-250"), b"\0" * 44)
        write(os.path.join(d, "diverged.x"), b"")
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)  # recovery ignores these files, and so does the check
        self.assertIn("replication:  2: diverged.201-250, replication.state", r.out)
        self.assertIn(".torn:        2: 0000000001.seg.272.torn, 0000000001.seg.272.torn.1", r.out)
        self.assertIn(".discarded:   1: 0000000002.seg.discarded", r.out)
        self.assertIn("other files:  2: diverged.x, notes.txt", r.out)
        j = json.loads(kvfsck("--json", d).out)
        self.assertEqual(j["summary"]["torn_files"], ["0000000001.seg.272.torn", "0000000001.seg.272.torn.1"])
        self.assertEqual(j["summary"]["discarded_files"], ["0000000002.seg.discarded"])
        self.assertEqual(j["summary"]["other_files"], ["diverged.x", "notes.txt"])
        self.assertEqual(j["summary"]["replication_files"], ["diverged.201-250", "replication.state"])
        self.assertTrue(j["summary"]["lock_file"])

    def test_empty_directory_is_clean(self):
        d = os.path.join(self.tmp, "empty")
        os.mkdir(d)
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertEqual(text_field(r.out, "segments"), 0)


# ---- damage shapes ----
#
# Every damage of this file, by name: (base, damage(d, bases)), where d is
# a fresh copy of the base directory and bases maps base names to the
# pristine directories. The named tests below apply them one at a time;
# TestAgreement applies every one and checks that kvfsck's verdict (kvd
# starts or refuses) is what a real kvd does.

SHAPES = {}


def shape(name, base):
    def register(fn):
        SHAPES[name] = (base, fn)
        return fn
    return register


def rewrite(d, name, fn):
    p = os.path.join(d, name)
    write(p, fn(read(p)))


def flipped(data, off, bit):
    b = bytearray(data)
    b[off] ^= bit
    return bytes(b)


def junk(n, x=12345):
    out = bytearray()
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0xffffffff
        out.append((x >> 16) & 0xff)
    return bytes(out)


@shape("crash: truncated record header", "crash")
def d_truncated_header(d, bases):
    # 20 of the 44 header bytes, the last 3 zeros (klen's high bytes)
    rewrite(d, SEG1, lambda b: b + b[32:52])


@shape("crash: truncated payload", "crash")
def d_truncated_payload(d, bases):
    rewrite(d, SEG1, lambda b: b + b[32:80 - 3])  # header whole, payload cut


@shape("crash: garbage appended", "crash")
def d_garbage(d, bases):
    rewrite(d, SEG1, lambda b: b + junk(300))


@shape("crash: preallocated zeros", "crash_prealloc")
def d_none(d, bases):
    pass


@shape("crash: flip in a sequence number", "crash")
def d_flip_seq(d, bases):
    rewrite(d, SEG1, lambda b: flipped(b, PUT5[2] + 24, 0x04))  # k3


@shape("crash: flip in a key", "crash")
def d_flip_key(d, bases):
    rewrite(d, SEG1, lambda b: flipped(b, PUT5[2] + REC_HDR, 0x01))  # 'k' of k3


@shape("crash: flip in a value", "crash")
def d_flip_value(d, bases):
    rewrite(d, SEG1, lambda b: flipped(b, PUT5[1] + REC_HDR + 3, 0x80))  # '2' of v2


@shape("crash: flip in a length", "crash")
def d_flip_len(d, bases):
    rewrite(d, SEG1, lambda b: flipped(b, PUT5[2] + 8 + 2, 0x01))  # k3's len += 65536


@shape("crash: flip in the last record", "crash")
def d_flip_last_record(d, bases):
    rewrite(d, SEG1, lambda b: flipped(b, PUT5[4] + REC_HDR + 2, 0x02))  # k5, before its commit mark


@shape("crash: flip in the last commit mark", "crash")
def d_flip_last_mark(d, bases):
    rewrite(d, SEG1, lambda b: flipped(b, PUT5[4] + 48 + 30, 0x01))


@shape("crash: batch torn in the middle", "batch_crash")
def d_batch_torn(d, bases):
    data = read(os.path.join(d, SEG1))
    boff = [o for o, _, t, _ in records(data) if t == BATCH][0]
    # The batch header and its first two entries (complete, valid-looking
    # records) reach the disk, the rest does not.
    write(os.path.join(d, SEG1), data[:boff + REC_HDR + 2 * 48 + 5])


@shape("crash: newest segment's header torn during a rotation", "crash")
def d_crash_mid_rotation(d, bases):
    write(os.path.join(d, seg_name(2)), b"KVDS\x01")


@shape("clean: flip in the last record of the sealed segment", "five")
def d_clean_flip_last_record(d, bases):
    rewrite(d, SEG1, lambda b: flipped(b, PUT5[4] + REC_HDR + 2, 0x02))  # k5


@shape("clean: flip in the trailer", "five")
def d_clean_flip_trailer(d, bases):
    rewrite(d, SEG1, lambda b: flipped(b, CRASH_END + 30, 0x01))


@shape("clean: garbage in the empty newest segment", "five")
def d_clean_garbage_newest(d, bases):
    rewrite(d, seg_name(2), lambda b: b + junk(100))


@shape("clean: newest segment's header torn", "five")
def d_clean_newest_torn_header(d, bases):
    write(os.path.join(d, seg_name(2)), b"KVDS\x01")


@shape("clean: sequence going back in the newest segment", "five")
def d_seq_back(d, bases):
    # Segment 2 (its own valid header) repeats segment 1's records, marks
    # included, at the same offsets: every record goes back behind the log.
    s1 = read(os.path.join(d, SEG1))
    rewrite(d, seg_name(2), lambda b: b + s1[32:CRASH_END])


@shape("multi: zeros after a sealed segment's trailer", "multi")
def d_zeros_after_trailer(d, bases):
    rewrite(d, SEG1, lambda b: b + b"\0" * 64)


@shape("multi: sealed segment cut inside its last record", "multi")
def d_multi_cut_in_record(d, bases):
    data = read(os.path.join(d, SEG1))
    off, ln, _, _ = data_records(data)[-1]
    write(os.path.join(d, SEG1), data[:off + ln - 10])


@shape("multi: flip in a hinted sealed segment", "multi")
def d_multi_flip_sealed(d, bases):
    data = read(os.path.join(d, seg_name(2)))
    off, ln, _, _ = data_records(data)[2]
    write(os.path.join(d, seg_name(2)), flipped(data, off + ln - 1, 0x10))  # in the value


@shape("v1: zeros ending a sealed segment", "crash")
def d_v1_zeros_sealed(d, bases):
    write(os.path.join(d, SEG1), v1_segment(1, read(os.path.join(d, SEG1))) + b"\0" * 64)
    write(os.path.join(d, seg_name(2)), seg_header(2))


@shape("v1: flip in the last record of the newest segment", "crash")
def d_v1_flip_last(d, bases):
    v1 = v1_segment(1, read(os.path.join(d, SEG1)))
    write(os.path.join(d, SEG1), flipped(v1, 32 + 4 * 48 + REC_HDR + 2, 0x02))


@shape("v1: sequence going back across segments", "crash")
def d_v1_seq_back(d, bases):
    v1 = v1_segment(1, read(os.path.join(d, SEG1)))
    write(os.path.join(d, SEG1), v1)
    write(os.path.join(d, seg_name(3)), seg_header(3) + v1[32:])


@shape("missing: sealed segment deleted with its hint", "multi")
def d_deleted(d, bases):
    os.unlink(os.path.join(d, seg_name(3)))
    os.unlink(os.path.join(d, hint_name(3)))


@shape("missing: sealed segment deleted, its hint kept", "multi")
def d_deleted_keep_hint(d, bases):
    os.unlink(os.path.join(d, seg_name(3)))


@shape("missing: sealed segment emptied", "multi")
def d_emptied(d, bases):
    write(os.path.join(d, seg_name(3)), b"")


@shape("missing: sealed segment and its hint emptied", "multi")
def d_emptied_no_hint(d, bases):
    write(os.path.join(d, seg_name(3)), b"")
    os.unlink(os.path.join(d, hint_name(3)))


@shape("missing: sealed segment cut inside its header", "multi")
def d_cut_in_header(d, bases):
    rewrite(d, seg_name(3), lambda b: b[:10])


@shape("missing: first segment deleted with its hint", "multi")
def d_first_deleted(d, bases):
    os.unlink(os.path.join(d, SEG1))
    os.unlink(os.path.join(d, hint_name(1)))


@shape("missing: sealed segment truncated at a record boundary", "multi")
def d_truncated_at_boundary(d, bases):
    # without its trailer, its last record and that record's commit mark;
    # its hint is left from before the truncation
    data = read(os.path.join(d, seg_name(3)))
    recs = records(data)
    assert [t for _, _, t, _ in recs[-3:]] == [PUT, COMMIT, SEAL]
    write(os.path.join(d, seg_name(3)), data[:recs[-3][0]])


@shape("missing: newest segment deleted", "multi")
def d_newest_deleted(d, bases):
    os.unlink(os.path.join(d, seg_name(6)))


@shape("missing: hint file of a segment that never existed", "multi")
def d_orphan_99(d, bases):
    shutil.copy(os.path.join(d, hint_name(1)), os.path.join(d, hint_name(99)))


@shape("hint: stale, from another log", "multi")
def d_stale_hint(d, bases):
    shutil.copy(os.path.join(bases["multi_other"], hint_name(3)), os.path.join(d, hint_name(3)))


@shape("hint: another segment's hint copied over it", "multi")
def d_hint_of_other_segment(d, bases):
    shutil.copy(os.path.join(d, hint_name(4)), os.path.join(d, hint_name(3)))


HINT_HDR = 168


@shape("hint: damaged", "multi")
def d_hint_damaged(d, bases):
    rewrite(d, hint_name(2), lambda b: flipped(b, HINT_HDR + 10, 0x01))


@shape("hint: disagrees with its segment", "multi")
def d_hint_disagrees(d, bases):
    def fn(orig):
        bad = bytearray(orig)
        assert bad[HINT_HDR] == PUT
        # A well-formed hint with a valid CRC that claims an expiry the
        # segment's record does not have.
        struct.pack_into("<Q", bad, HINT_HDR + 32, 4102444800000)
        struct.pack_into("<I", bad, len(bad) - 4, zlib.crc32(bytes(bad[:-4])))
        return bytes(bad)
    rewrite(d, hint_name(1), fn)


ALL_BASES = {"five": FIVE, "crash": CRASH, "crash_prealloc": CRASH_PREALLOC, "batch_crash": BATCH_CRASH,
             "multi": MULTI, "multi_other": MULTI_OTHER}


class ShapeBase(Base):
    def damaged(self, name, to="data"):
        """A copy of the shape's base directory with the shape's damage."""
        base, fn = SHAPES[name]
        d = self.copy(base, to)
        fn(d, self.base)
        return d

    def five_values(self, but=()):
        return {"k%d" % i: b"v%d" % i for i in range(1, 6) if "k%d" % i not in but}

    def multi_values(self, but=()):
        return {"key:%03d" % i: MULTI_VALUE for i in range(120) if "key:%03d" % i not in but}


class TestShapes(ShapeBase):
    """One test per corruption shape; each checks file, offset, kind and
    exit code 4, that the directory is byte-for-byte unchanged, and kvd's
    verdict. "crash" shapes damage the newest segment left by kill -9
    (format 2: a torn tail is damage at or after the end of its last valid
    commit mark); "clean" and "multi" shapes damage directories kvd closed
    cleanly (its data in sealed segments with trailers and hint files);
    "v1" shapes are version 1 segments built by hand (the old rules)."""

    BASES = {"five": FIVE, "crash": CRASH, "crash_prealloc": CRASH_PREALLOC, "batch_crash": BATCH_CRASH,
             "multi": MULTI}

    def seg(self, d, name=SEG1):
        p = os.path.join(d, name)
        return p, read(p)

    def test_base_layout(self):
        # kill -9 after five SETs: five puts of 48 bytes at 32, 124, 216,
        # 308, 400, each followed by its commit mark (44 bytes: group start,
        # one record, the put's sequence number); nothing else
        p, data = self.seg(self.copy("crash"))
        self.assertEqual(len(data), CRASH_END)
        want = []
        for i, o in enumerate(PUT5):
            want += [(o, 48, PUT, i + 1), (o + 48, 44, COMMIT, i + 1)]
        self.assertEqual(records(data), want)
        for o in PUT5:
            self.assertEqual(data[o + 48:o + 92], mark(COMMIT, PUT5.index(o) + 1, o, 1))
        h = parse_header(data)
        self.assertEqual((h["version"], h["id"], h["replaces"], h["prev_id"], h["prev_end"], h["crc_ok"]),
                         (2, 1, 0, 0, 0, True))
        self.assertEqual(sorted(os.listdir(os.path.dirname(p))), sorted(["LOCK", SEG1]))
        # with preallocation, zeros follow
        p, z = self.seg(self.copy("crash_prealloc", "z"))
        self.assertEqual(z[32:CRASH_END], data[32:CRASH_END])
        self.assertGreater(len(z), CRASH_END)
        self.assertFalse(any(z[CRASH_END:]))
        # after a clean stop: the same, then a trailer (its own offset, 5
        # records), the hint file, and an empty segment 2 naming segment 1
        # and its size
        d = self.copy("five", "clean")
        _, clean = self.seg(d)
        self.assertEqual(clean[32:CRASH_END], data[32:CRASH_END])
        self.assertEqual(clean[CRASH_END:], mark(SEAL, 5, CRASH_END, 5))
        self.assertEqual(len(clean), FIVE_SEG1)
        _, s2 = self.seg(d, seg_name(2))
        self.assertEqual(len(s2), 32)
        h2 = parse_header(s2)
        self.assertEqual((h2["version"], h2["id"], h2["prev_id"], h2["prev_end"], h2["crc_ok"]),
                         (2, 2, 1, FIVE_SEG1, True))
        self.assertEqual(sorted(os.listdir(d)), sorted([hint_name(1), "LOCK", SEG1, seg_name(2)]))

    # ---- the newest segment after a crash (kill -9) ----

    def test_truncated_header_is_torn_tail(self):
        d = self.damaged("crash: truncated record header")
        r = self.expect_one_problem(d, SEG1, CRASH_END, 17, "torn tail", "incomplete record header", starts=True)
        self.assertIn("unwritten:    3 ", r.out)
        self.assertEqual(text_field(r.out, "live keys"), 5)
        self.assertIn("kvfsck --repair " + d, r.out)
        self.assertIn("The only problem is a torn tail", r.out)
        self.assertEqual(self.kvd_json(d)["torn_bytes_cut"], 17)
        self.expect_kvd_serves(d, self.five_values())
        self.assertEqual(read(os.path.join(d, SEG1 + ".%d.torn" % CRASH_END)), read(os.path.join(d, SEG1))[32:49])

    def test_truncated_payload_is_torn_tail(self):
        d = self.damaged("crash: truncated payload")
        self.expect_one_problem(d, SEG1, CRASH_END, 45, "torn tail", "record runs past end of file", starts=True)

    def test_zero_filled_tail_is_unwritten_space_not_a_problem(self):
        # What kvd leaves after a crash with --preallocate yes: zeros past
        # the last record of the newest segment, which it cuts at start.
        d = self.damaged("crash: preallocated zeros")
        p, data = self.seg(d)
        zeros = len(data) - CRASH_END
        self.assertGreater(zeros, 0)
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertEqual(text_field(r.out, "problems"), 0)
        self.assertIn("unwritten:    %d " % zeros, r.out)
        self.assertEqual(text_field(r.out, "dead bytes"), CRASH_END - 32 - 5 * 48)  # the marks
        j = json.loads(kvfsck("--json", d).out)
        self.assertEqual(j["summary"]["unwritten_bytes"], zeros)
        self.assertEqual(j["segments"][-1]["unwritten_bytes"], zeros)
        self.assertTrue(j["summary"]["kvd"]["starts"])
        self.assertEqual(read(p), data)  # read-only: nothing cut
        self.expect_kvd_serves(d, self.five_values())
        # kvd cut them, saving nothing, and sealed the segment when it stopped
        self.assertEqual(read(p), data[:CRASH_END] + mark(SEAL, 5, CRASH_END, 5))
        self.assertFalse([n for n in os.listdir(d) if n.endswith(".torn")])

    def test_garbage_appended_is_torn_tail(self):
        d = self.damaged("crash: garbage appended")
        self.expect_one_problem(d, SEG1, CRASH_END, 300, "torn tail", starts=True)
        self.assertEqual(self.kvd_json(d)["torn_bytes_cut"], 300)
        junk_bytes = read(os.path.join(d, SEG1))[CRASH_END:]
        self.expect_kvd_serves(d, self.five_values())
        self.assertEqual(read(os.path.join(d, SEG1 + ".%d.torn" % CRASH_END)), junk_bytes)

    def test_bit_flip_in_header_field_mid_log_is_corruption(self):
        d = self.damaged("crash: flip in a sequence number")
        r = self.expect_one_problem(d, SEG1, PUT5[2], 48, "mid-log corruption", "record header checksum",
                                    starts=False)
        self.assertIn("(valid records follow)", r.out)
        self.assertIn("kvfsck --repair --salvage " + d, r.out)
        self.assertEqual(text_field(r.out, "records"), 4)
        self.assertIn("mid-log corruption in %s/%s at byte offset %d" % (d, SEG1, PUT5[2]), r.out)
        self.expect_kvd_refuses(d, [SEG1])

    def test_bit_flip_in_key_mid_log_is_corruption(self):
        d = self.damaged("crash: flip in a key")
        self.expect_one_problem(d, SEG1, PUT5[2], 48, "mid-log corruption", "record checksum mismatch", starts=False)

    def test_bit_flip_in_value_mid_log_is_corruption(self):
        d = self.damaged("crash: flip in a value")
        self.expect_one_problem(d, SEG1, PUT5[1], 48, "mid-log corruption", "record checksum mismatch", starts=False)

    def test_bit_flip_in_length_mid_log_followed_by_valid_records_is_corruption(self):
        # len += 65536: the record seems to run past end of file, which
        # looks like a torn tail; its header checksum and the valid records
        # after it make it mid-log corruption.
        d = self.damaged("crash: flip in a length")
        r = self.expect_one_problem(d, SEG1, PUT5[2], 48, "mid-log corruption", "record header checksum",
                                    starts=False)
        self.assertEqual(text_field(r.out, "records"), 4)
        self.assertEqual(text_field(r.out, "live keys"), 4)

    def test_bit_flip_in_last_record_of_newest_segment_is_mid_log_corruption(self):
        # Format 2: the last put's commit mark follows it, so the put was
        # written whole and acknowledged: damage to it is not a torn tail
        # (version 1 called it one: see the v1 test below).
        d = self.damaged("crash: flip in the last record")
        self.expect_one_problem(d, SEG1, PUT5[4], 48, "mid-log corruption", "record checksum mismatch",
                                starts=False)
        self.expect_kvd_refuses(d, [SEG1])

    def test_bit_flip_in_last_commit_mark_is_torn_tail(self):
        # Damage after the end of the last valid commit mark: the put before
        # it (k5) is whole and kept, the damaged mark is cut.
        d = self.damaged("crash: flip in the last commit mark")
        r = self.expect_one_problem(d, SEG1, PUT5[4] + 48, 41, "torn tail", "record header checksum",
                                    starts=True)
        self.assertIn("unwritten:    3 ", r.out)  # the mark's last bytes are zeros
        self.assertEqual(text_field(r.out, "records"), 5)
        self.expect_kvd_serves(d, self.five_values())

    def test_batch_torn_in_the_middle_is_torn_tail_and_applies_none_of_it(self):
        d = self.damaged("crash: batch torn in the middle")
        p, data = self.seg(d)
        orig = read(os.path.join(self.base["batch_crash"], SEG1))
        recs = records(orig)
        self.assertEqual([t for _, _, t, _ in recs], [PUT, COMMIT, PUT, COMMIT, BATCH, COMMIT])
        boff, blen = recs[4][0], recs[4][1]
        cut = len(data)
        self.assertLess(cut, boff + blen)
        r = self.expect_one_problem(d, SEG1, boff, cut - boff, "torn tail", "record runs past end of file",
                                    starts=True)
        self.assertEqual(text_field(r.out, "records"), 2)
        self.assertEqual(text_field(r.out, "live keys"), 2)
        self.expect_kvd_serves(d, {"k1": b"v1", "k2": b"v2", "k3": None, "k4": None, "k5": None})

    def test_whole_batch_counts_its_entries(self):
        d = self.copy("batch_crash")
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertRegex(r.out, r"records:\s+3 \(1 batches; 5 entries")
        self.assertEqual(text_field(r.out, "live keys"), 5)

    def test_newest_segment_header_torn_during_a_rotation(self):
        # kill -9 left segment 1 without its trailer; a rotation then began
        # segment 2 and crashed in its header: recovery cuts the header and
        # writes segment 1's trailer.
        d = self.damaged("crash: newest segment's header torn during a rotation")
        r = self.expect_one_problem(d, seg_name(2), 0, 5, "torn tail", "segment shorter than its header",
                                    starts=True)
        self.assertIn("writes the trailer the crash left unwritten", r.out)
        self.assertEqual(self.kvd_json(d)["rotations_completed"], 1)
        self.expect_kvd_serves(d, self.five_values())
        data = read(os.path.join(d, SEG1))
        self.assertEqual(data[-44:], mark(SEAL, 5, CRASH_END, 5))
        self.assertEqual(kvfsck(d).rc, CLEAN)

    # ---- after a clean stop: the data is in sealed segments ----

    def test_bit_flip_in_last_record_after_clean_stop_is_sealed_segment_corruption(self):
        # The same flip after a clean stop: segment 1 is sealed and has a
        # hint file, so kvd starts (without reading the record) and answers
        # an error for k5, never wrong data.
        d = self.damaged("clean: flip in the last record of the sealed segment")
        r = self.expect_one_problem(d, SEG1, PUT5[4], 48, "sealed-segment corruption", "record checksum mismatch",
                                    starts=True)
        self.assertIn("kvd starts on this directory: it loads 1 sealed segment from hint files", r.out)
        self.assertIn("A read of a damaged\nkey answers an error", r.out)
        self.assertIn("kvfsck --repair --salvage " + d, r.out)
        self.assertEqual(self.kvd_json(d)["segments_from_hints"], 1)
        self.expect_kvd_serves(d, self.five_values(but=["k5"]), errors=["k5"])
        # without the hint file kvd reads the segment and refuses
        os.unlink(os.path.join(d, hint_name(1)))
        self.expect_one_problem(d, SEG1, PUT5[4], 48, "sealed-segment corruption", starts=False)
        self.expect_kvd_refuses(d, [SEG1])

    def test_bit_flip_in_trailer_is_one_torn_trailer(self):
        # Segment 2 is empty and names segment 1, exactly as after a crash
        # between a rotation's new header and its trailer, so recovery takes
        # the damaged trailer for a torn one: it cuts it and writes it again
        # (a trailer holds no data). kvfsck lists one torn tail (the zeros
        # ending the trailer are unwritten space, as recovery counts them)
        # and says that kvd writes the trailer again.
        d = self.damaged("clean: flip in the trailer")
        j = self.kvd_json(d)
        self.assertTrue(j["starts"])
        self.assertEqual(j["rotations_completed"], 1)
        r = self.expect_one_problem(d, SEG1, CRASH_END, None, "torn tail", starts=True)
        self.assertIn("writes the trailer the crash left unwritten", r.out)

    def test_bit_flip_in_trailer_kvd_rewrites_it(self):
        # What kvd does with the shape above (kvfsck agrees that it starts).
        d = self.damaged("clean: flip in the trailer")
        self.assertTrue(self.kvd_json(d)["starts"])
        self.expect_kvd_serves(d, self.five_values())
        self.assertEqual(read(os.path.join(d, SEG1))[CRASH_END:FIVE_SEG1], mark(SEAL, 5, CRASH_END, 5))
        self.assertEqual(kvfsck(d).rc, CLEAN)

    def test_garbage_in_empty_newest_segment_is_torn_tail(self):
        d = self.damaged("clean: garbage in the empty newest segment")
        self.expect_one_problem(d, seg_name(2), 32, 100, "torn tail", starts=True)
        self.expect_kvd_serves(d, self.five_values())

    def test_bad_segment_header_of_newest_segment_with_nothing_after_is_torn_tail(self):
        d = self.damaged("clean: newest segment's header torn")
        self.expect_one_problem(d, seg_name(2), 0, 5, "torn tail", "segment shorter than its header", starts=True)
        self.assertEqual(self.kvd_json(d)["rotations_completed"], 0)  # segment 1 has its trailer

    def test_sequence_going_back_in_the_newest_segment(self):
        d = self.damaged("clean: sequence going back in the newest segment")
        r = self.expect_problems(d, [(seg_name(2), o, 48, "sequence going back", "sequence number does not increase")
                                     for o in PUT5], starts=False)
        self.assertEqual(text_field(r.out, "records"), 5)
        self.expect_kvd_refuses(d, [seg_name(2)])

    def test_zeros_after_a_sealed_segments_trailer_are_corruption(self):
        # Segment 2 exists and is not empty: segment 1 was sealed whole, and
        # nothing may follow its trailer; segment 2's header says how long
        # segment 1 was.
        d = self.damaged("multi: zeros after a sealed segment's trailer")
        size = os.path.getsize(os.path.join(self.base["multi"], SEG1))
        self.expect_problems(d, [(SEG1, size, 64, "sealed-segment corruption", "bytes after the segment trailer"),
                                 (SEG1, size + 64, 0, "missing data", "not the size the next segment recorded")],
                             starts=False)
        self.expect_kvd_refuses(d, [SEG1])

    def test_corrupt_sealed_segment_is_sealed_segment_corruption(self):
        # A short record at the end of a sealed segment is not a torn tail:
        # that segment was complete when it was sealed.
        d = self.damaged("multi: sealed segment cut inside its last record")
        p, data = self.seg(d)
        off, ln, _, _ = data_records(read(os.path.join(self.base["multi"], SEG1)))[-1]
        self.assertEqual(len(data), off + ln - 10)
        r = self.expect_problems(d, [(SEG1, off, ln - 10, "sealed-segment corruption", "record runs past end of file"),
                                     (SEG1, off + ln - 10, 0, "missing data", "sealed segment has no trailer"),
                                     (SEG1, off + ln - 10, 0, "missing data", "not the size the next segment recorded")],
                                 starts=False)
        self.assertIn("kvfsck --repair --salvage", r.out)
        self.expect_kvd_refuses(d, [SEG1])

    def test_bit_flip_in_sealed_segment_is_sealed_segment_corruption(self):
        d = self.damaged("multi: flip in a hinted sealed segment")
        off, ln, _, _ = data_records(read(os.path.join(self.base["multi"], seg_name(2))))[2]
        self.expect_one_problem(d, seg_name(2), off, ln, "sealed-segment corruption", "record checksum mismatch",
                                starts=True)

    def test_flipped_byte_in_hinted_sealed_segment_kvd_starts_and_answers_an_error(self):
        d = self.damaged("multi: flip in a hinted sealed segment")
        data = read(os.path.join(d, seg_name(2)))
        off = data_records(data)[2][0]
        key = record_key(data, off).decode()
        nsegs = len([n for n in os.listdir(d) if n.endswith(".seg")])
        j = self.kvd_json(d)
        self.assertEqual((j["starts"], j["segments_from_hints"], j["message"]), (True, nsegs - 1, None))
        r = kvfsck(d)
        self.assertIn("kvd starts on this directory: it loads %d sealed segments from hint files" % (nsegs - 1), r.out)
        self.expect_kvd_serves(d, self.multi_values(but=[key]), errors=[key])

    # ---- version 1 segments, built by hand: the old rules still hold ----

    def test_v1_bit_flip_in_last_record_of_newest_segment_is_torn_tail(self):
        d = self.damaged("v1: flip in the last record of the newest segment")
        self.expect_one_problem(d, SEG1, 32 + 4 * 48, 48, "torn tail", "record checksum mismatch", starts=True)
        self.expect_kvd_serves(d, self.five_values(but=["k5"]) | {"k5": None})

    def test_v1_zeros_ending_a_sealed_segment_are_corruption(self):
        d = self.damaged("v1: zeros ending a sealed segment")
        self.expect_one_problem(d, SEG1, 32 + 5 * 48, 64, "sealed-segment corruption", "unwritten zero-filled space",
                                starts=False)

    def test_v1_sequence_going_back_across_segments(self):
        # Segment 3 repeats segment 1's records (with a valid header of its
        # own): every record's sequence number goes back behind the log.
        d = self.damaged("v1: sequence going back across segments")
        r = self.expect_problems(d, [(seg_name(3), 32 + 48 * i, 48, "sequence going back", None) for i in range(5)],
                                 starts=False)
        self.assertEqual(text_field(r.out, "records"), 5)


class TestRepair(Base):
    BASES = {"crash": CRASH, "five": FIVE, "multi": MULTI}

    def damage_tail(self, d):
        # the newest segment after kill -9: garbage after its last commit mark
        p = os.path.join(d, SEG1)
        data = read(p)
        write(p, data + b"\x5a" * 100)  # garbage: zeros would be unwritten space
        return data

    def damage_mid(self, d, name=SEG1, rec=2):
        p = os.path.join(d, name)
        data = read(p)
        off = data_records(data)[rec][0]
        b = bytearray(data)
        b[off + REC_HDR] ^= 0x01
        write(p, bytes(b))
        return bytes(b)

    def test_repair_cuts_a_torn_tail_and_keeps_the_bytes(self):
        d = self.copy("crash")
        clean = self.damage_tail(d)
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        self.assertIn("result: all 1 problem repaired", r.out)
        self.assertEqual(read(os.path.join(d, SEG1)), clean)
        torn = os.path.join(d, SEG1 + ".%d.torn" % CRASH_END + "")
        self.assertEqual(read(torn), b"\x5a" * 100)
        self.assertIn("the cut bytes are in " + torn, r.out)
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertIn(".torn:        1: 0000000001.seg.%d.torn" % CRASH_END + "", r.out)

    def test_repair_never_overwrites_a_torn_file(self):
        d = self.copy("crash")
        self.damage_tail(d)
        write(os.path.join(d, SEG1 + ".%d.torn" % CRASH_END + ""), b"older")
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        self.assertEqual(read(os.path.join(d, SEG1 + ".%d.torn" % CRASH_END + "")), b"older")
        self.assertEqual(read(os.path.join(d, SEG1 + ".%d.torn" % CRASH_END + ".1")), b"\x5a" * 100)

    def test_repair_refuses_mid_log_corruption_without_salvage(self):
        d = self.copy("crash")
        self.damage_mid(d)
        before = snapshot(d)
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, LEFT, r)
        self.assertIn("unless --salvage", r.out)
        self.assertEqual(snapshot(d), before)

    def test_repair_without_yes_off_a_terminal_changes_nothing(self):
        d = self.copy("crash")
        self.damage_tail(d)
        before = snapshot(d)
        r = kvfsck("--repair", d)
        self.assertEqual(r.rc, LEFT, r)
        self.assertIn("--yes needed when not on a terminal", r.out)
        self.assertEqual(snapshot(d), before)

    def run_on_pty(self, answer, d):
        """Runs kvfsck --repair with a terminal as stdin; answers the
        question with `answer`. Returns (exit code, terminal output)."""
        master, slave = pty.openpty()
        try:
            p = subprocess.Popen([kvfsck_bin(), "--repair", d], stdin=slave, stdout=subprocess.PIPE,
                                 stderr=slave, env=env())
            os.close(slave)
            slave = None
            seen = b""
            deadline = time.monotonic() + 60
            while b"[y/N]" not in seen and time.monotonic() < deadline:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            os.write(master, answer + b"\n")
            out, _ = p.communicate(timeout=60)
            return p.returncode, seen.decode(errors="replace"), out.decode(errors="replace")
        finally:
            if slave is not None:
                os.close(slave)
            os.close(master)

    def test_repair_asks_on_a_terminal(self):
        d = self.copy("crash")
        self.damage_tail(d)
        before = snapshot(d)
        rc, tty, out = self.run_on_pty(b"n", d)
        self.assertIn("Repair 1 problem in %s? [y/N]" % d, tty)
        self.assertEqual(rc, LEFT, out)
        self.assertEqual(snapshot(d), before)
        rc, tty, out = self.run_on_pty(b"y", d)
        self.assertEqual(rc, REPAIRED, out)
        self.assertEqual(kvfsck(d).rc, CLEAN)

    def test_salvage_keeps_every_valid_record_and_the_originals(self):
        d = self.copy("multi")
        segs = sorted(n for n in os.listdir(d) if n.endswith(".seg"))
        newest, before_newest = segs[-1], segs[-2]
        orig1 = read(os.path.join(d, SEG1))
        damaged = self.damage_mid(d, SEG1, rec=3)  # sealed-segment corruption
        tail_before = read(os.path.join(d, newest))
        self.assertEqual(len(tail_before), 32)     # the clean stop's empty segment
        with open(os.path.join(d, newest), "ab") as f:
            f.write(b"\x5a" * 64)                   # and a torn tail
        before = snapshot(d)
        r0 = kvfsck(d)
        self.assertEqual(r0.rc, LEFT, r0)
        self.assertEqual(text_field(r0.out, "records"), 119)
        self.assertEqual([(os.path.basename(p["path"]), p["kind"]) for p in text_problems(r0.out)],
                         [(SEG1, "sealed-segment corruption"), (newest, "torn tail")])

        r = kvfsck("--repair", "--salvage", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        self.assertIn("original in %s/%s.orig" % (d, SEG1), r.out)
        after = snapshot(d)
        # the originals are kept whole; undamaged segments are untouched
        self.assertEqual(after[SEG1 + ".orig"], before[SEG1])
        self.assertEqual(after[newest + ".orig"], before[newest])
        for n in segs[1:-1]:
            self.assertEqual(after[n], before[n])
            self.assertNotIn(n + ".orig", after)
        self.assertFalse([n for n in after if n.endswith(".salvage")])
        # The rewrite of segment 1 is a format 2 segment that replaces
        # itself (so segment 2's record of its old size does not apply),
        # with its creation time, its data records minus the damaged one,
        # no commit marks, and a trailer.
        kept = [damaged[o:o + ln] for o, ln, _, _ in data_records(damaged)]
        del kept[3]
        body = b"".join(kept)
        h = parse_header(orig1)
        self.assertEqual(after[SEG1], seg_header_v2(1, 0, 0, h["created_s"], replaces=1) + body +
                         mark(SEAL, 27, 32 + len(body), 26))
        # The newest segment keeps its (no) records, now names the segment
        # before it with its size, and gets no trailer: it is still the
        # newest.
        h6 = parse_header(tail_before)
        self.assertEqual(after[newest], seg_header_v2(h6["id"], h6["id"] - 1, len(before[before_newest]),
                                                      h6["created_s"], replaces=h6["id"]))
        # segment 1's hint described the old bytes: it was rebuilt
        self.assertNotEqual(after[hint_name(1)], before[hint_name(1)])

        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertEqual(text_field(r.out, "records"), 119)
        self.assertIn(".orig:        2:", r.out)
        self.assertRegex(r.out, r"hint files:\s+%d \(%d valid" % (len(segs) - 1, len(segs) - 1))

        # kvd opens it and serves every valid record
        s = self.start_kvd(d)
        c = s.client()
        self.assertEqual(c.dbsize(), 119)
        self.assertIsNone(c.get("key:003"))
        for i in range(120):
            if i != 3:
                self.assertEqual(c.get("key:%03d" % i), MULTI_VALUE)
        c.close()
        self.stop_kvd(s)

    def test_salvage_drops_records_whose_sequence_goes_back(self):
        d = self.copy("five")
        data = read(os.path.join(d, SEG1))
        s2 = read(os.path.join(d, seg_name(2)))
        stale = data[32:80]  # k1=v1, seq 1
        write(os.path.join(d, seg_name(2)), s2 + stale)
        r = self.expect_one_problem(d, seg_name(2), 32, 48, "sequence going back", starts=False)
        r = kvfsck("--repair", "--salvage", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        h = parse_header(s2)
        self.assertEqual(read(os.path.join(d, seg_name(2))),
                         seg_header_v2(2, 1, FIVE_SEG1, h["created_s"], replaces=2))
        self.assertEqual(read(os.path.join(d, seg_name(2) + ".orig")), s2 + stale)
        self.assertEqual(read(os.path.join(d, SEG1)), data)
        self.assertEqual(kvfsck(d).rc, CLEAN)
        s = self.start_kvd(d)
        c = s.client()
        self.assertEqual(c.dbsize(), 5)
        c.close()
        self.stop_kvd(s)

    def test_repair_while_kvd_holds_the_directory_exits_8(self):
        d = self.copy("crash")
        s = self.start_kvd(d)
        before = {n: v for n, v in snapshot(d).items()}
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, OPERROR, r)
        self.assertIn("%s is in use (kvd or another tool holds %s/LOCK); stop it first" % (d, d), r.err)
        self.assertEqual(snapshot(d), before)
        r = kvfsck("--repair", "--yes", "--json", d)
        self.assertEqual(r.rc, OPERROR, r)
        self.assertEqual(json.loads(r.out)["exit_code"], OPERROR)
        self.stop_kvd(s)

    def test_repair_of_a_clean_directory_exits_0(self):
        d = self.copy("crash")
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertIn("nothing to repair", r.out)


class TestHintFiles(ShapeBase):
    """Hint files (NNNNNNNNNN.hint, docs/format.md): every one is checked
    against its segment; a damaged, stale or disagreeing one is a problem
    that --repair rebuilds (kvd starts: it scans those segments); one
    without a segment is evidence of a lost segment (kvd refuses)."""
    BASES = {"multi": MULTI, "multi_other": MULTI_OTHER}

    def hints(self, d):
        return sorted(n for n in os.listdir(d) if n.endswith(".hint"))

    def test_every_sealed_segment_has_a_valid_hint(self):
        d = self.copy("multi")
        segs = sorted(n for n in os.listdir(d) if n.endswith(".seg"))
        hints = self.hints(d)
        self.assertEqual(hints, [n[:-4] + ".hint" for n in segs[:-1]])
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        n = len(hints)
        self.assertRegex(r.out, r"hint files:\s+%d \(%d valid, 0 bad, 0 not checked, 0 without a segment\); "
                                r"0 sealed segments without one" % (n, n))
        j = json.loads(kvfsck("--json", d).out)
        self.assertEqual([(h["file"], h["state"], h["problem"]) for h in j["summary"]["hint_files"]],
                         [(h, "valid", False) for h in hints])
        self.assertEqual(j["summary"]["sealed_without_hint"], 0)
        # Without its hint, a sealed segment is counted, not a problem.
        os.unlink(os.path.join(d, hints[0]))
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertRegex(r.out, r"; 1 sealed segment without one")

    def repair_restores(self, d, name, orig):
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        self.assertIn("removed 1 bad hint file", r.out)
        self.assertEqual(read(os.path.join(d, name)), orig)
        self.assertEqual(kvfsck(d).rc, CLEAN)

    def test_damaged_hint_is_a_problem_and_repair_rebuilds_it(self):
        d = self.copy("multi")
        name = self.hints(d)[1]
        p = os.path.join(d, name)
        orig = read(p)
        bad = bytearray(orig)
        bad[HINT_HDR + 10] ^= 0x01
        write(p, bytes(bad))
        r = self.expect_one_problem(d, name, 0, len(orig), "bad hint file", "damaged")
        self.assertIn("The only problems are bad hint files", r.out)
        self.repair_restores(d, name, orig)

    def test_stale_hint_is_a_problem_and_repair_rebuilds_it(self):
        # Segment 3's hint from another log (the same keys, longer values):
        # valid in itself, but it describes other bytes than the segment's.
        d = self.damaged("hint: stale, from another log")
        name = hint_name(3)
        hint_len = os.path.getsize(os.path.join(d, name))
        r = self.expect_one_problem(d, name, 0, hint_len, "bad hint file", "stale", starts=True)
        self.assertIn("The only problems are bad hint files", r.out)
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        self.assertEqual(read(os.path.join(d, name)), read(os.path.join(self.base["multi"], name)))
        self.assertEqual(kvfsck(d).rc, CLEAN)

    def test_hint_that_disagrees_with_its_segment_is_a_problem(self):
        d = self.copy("multi")
        name = self.hints(d)[0]
        p = os.path.join(d, name)
        orig = read(p)
        bad = bytearray(orig)
        e = HINT_HDR
        self.assertEqual(bad[e], 1)  # a put
        # A well-formed hint with a valid CRC that claims an expiry the
        # segment's record does not have.
        struct.pack_into("<Q", bad, e + 32, 4102444800000)
        struct.pack_into("<I", bad, len(bad) - 4, zlib.crc32(bytes(bad[:-4])))
        write(p, bytes(bad))
        self.expect_one_problem(d, name, 0, len(orig), "bad hint file", "disagrees with its segment")
        self.repair_restores(d, name, orig)

    def test_hint_without_a_segment_is_missing_data_and_kept(self):
        d = self.damaged("missing: hint file of a segment that never existed")
        stray = os.path.join(d, hint_name(99))
        size = os.path.getsize(stray)
        r = self.expect_one_problem(d, hint_name(99), 0, size, "missing data", "hint file whose segment is missing",
                                    starts=False)
        self.assertRegex(r.out, r"1 without a segment")
        j = json.loads(kvfsck("--json", d).out)
        self.assertIn({"file": hint_name(99), "segment": 99, "bytes": size,
                       "state": "its segment is missing", "problem": True}, j["summary"]["hint_files"])
        self.assertEqual(j["summary"]["problems_by_kind"]["missing data"], 1)
        self.assertIn(hint_name(99), j["summary"]["kvd"]["message"])
        # kvd refuses and keeps the hint (the evidence of a lost segment)
        self.expect_kvd_refuses(d, [hint_name(99)])
        self.assertTrue(os.path.exists(stray))
        # --repair alone does not touch it; --salvage sets it aside
        before = snapshot(d)
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, LEFT, r)
        self.assertEqual(snapshot(d), before)
        r = kvfsck("--repair", "--salvage", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        self.assertFalse(os.path.exists(stray))
        self.assertEqual(read(stray + ".orphan"), before[hint_name(99)])
        self.assertEqual(kvfsck(d).rc, CLEAN)
        self.expect_kvd_serves(d, self.multi_values())


class TestMissing(ShapeBase):
    """Format 2's evidence of lost data, on a directory kvd stopped cleanly
    with 4 KiB segments (segments 1..5 sealed with hint files, 6 empty):
    every segment header names the segment before it and that one's size,
    every sealed segment ends with a trailer, and a hint file shows that
    its segment existed. kvfsck reports what is missing where, changes
    nothing, and says whether kvd starts; a real kvd does what it says."""

    BASES = {"multi": MULTI, "multi_other": MULTI_OTHER}

    def size(self, name):
        return os.path.getsize(os.path.join(self.base["multi"], name))

    def on_a_copy(self, d):
        c = d + "-copy"
        shutil.copytree(d, c)
        return c

    def refused(self, d, names):
        """kvfsck says kvd refuses, with kvd's own message, and a real kvd
        on a copy of d refuses with that message (naming names and
        kvfsck), changing nothing."""
        j = self.kvd_json(d)
        self.assertFalse(j["starts"], j)
        for n in names:
            self.assertIn(os.path.join(d, n), j["message"])
        r = kvfsck(d)
        self.assertIn("kvd refuses to start on this directory in its default recovery mode:\n  " + j["message"], r.out)
        c = self.on_a_copy(d)
        log = self.expect_kvd_refuses(c, names)
        self.assertIn(j["message"].replace(d, c), log)

    def test_layout(self):
        d = self.copy("multi")
        self.assertEqual(sorted(n for n in os.listdir(d) if n != "LOCK"),
                         sorted([seg_name(i) for i in range(1, 7)] + [hint_name(i) for i in range(1, 6)]))
        for i in range(1, 7):
            data = read(os.path.join(d, seg_name(i)))
            h = parse_header(data)
            self.assertEqual((h["version"], h["id"], h["prev_id"]), (2, i, i - 1))
            if i > 1:
                self.assertEqual(h["prev_end"], self.size(seg_name(i - 1)))
            if i < 6:
                recs = records(data)
                self.assertEqual(recs[-1][2], SEAL)
                self.assertEqual(data[recs[-1][0]:], mark(SEAL, recs[-2][3], recs[-1][0], len(data_records(data))))
            else:
                self.assertEqual(len(data), 32)

    def test_sealed_segment_deleted_with_its_hint(self):
        d = self.damaged("missing: sealed segment deleted with its hint")
        self.expect_one_problem(d, seg_name(4), 0, 32, "missing data",
                                "the segment this one names as its predecessor is missing", starts=False)
        self.refused(d, [seg_name(4)])

    def test_sealed_segment_deleted_keeping_its_hint(self):
        d = self.damaged("missing: sealed segment deleted, its hint kept")
        self.expect_problems(d, [(seg_name(4), 0, 32, "missing data", "names as its predecessor is missing"),
                                 (hint_name(3), 0, self.size(hint_name(3)), "missing data",
                                  "hint file whose segment is missing")], starts=False)
        j = json.loads(kvfsck("--json", d).out)
        self.assertIn({"file": hint_name(3), "segment": 3, "bytes": self.size(hint_name(3)),
                       "state": "its segment is missing", "problem": True}, j["summary"]["hint_files"])
        self.refused(d, [hint_name(3)])
        self.assertTrue(os.path.exists(os.path.join(d, hint_name(3))))  # the orphan hint is kept

    def test_sealed_segment_emptied(self):
        # An emptied (0-byte) sealed segment has no header and no trailer;
        # the next segment's header recorded its size: missing data at its
        # end, and kvd refuses (93 of 120 keys would be left).
        d = self.damaged("missing: sealed segment emptied")
        r = kvfsck(d)
        self.assertEqual(r.rc, LEFT, r)
        kinds = {(os.path.basename(p["path"]), p["kind"]) for p in text_problems(r.out)}
        self.assertIn((seg_name(3), "missing data"), kinds, r)
        self.refused(d, [seg_name(3)])

    def test_sealed_segment_and_its_hint_emptied(self):
        # The same bug without the hint file: kvfsck finds the directory
        # clean (exit 0) and kvd starts without segment 3's 27 keys.
        d = self.damaged("missing: sealed segment and its hint emptied")
        self.expect_problems(d, [(seg_name(3), 0, 0, "missing data", "not the size the next segment recorded")],
                             starts=False)
        self.refused(d, [seg_name(3)])

    def test_sealed_segment_cut_inside_its_header(self):
        d = self.damaged("missing: sealed segment cut inside its header")
        self.expect_problems(d, [(seg_name(3), 0, 10, "sealed-segment corruption", "segment shorter than its header"),
                                 (seg_name(3), 10, 0, "missing data", "not the size the next segment recorded")],
                             starts=False)
        self.refused(d, [seg_name(3)])

    def test_first_segment_deleted_with_its_hint(self):
        d = self.damaged("missing: first segment deleted with its hint")
        self.expect_one_problem(d, seg_name(2), 0, 32, "missing data",
                                "the segment this one names as its predecessor is missing", starts=False)
        self.refused(d, [seg_name(2)])

    def test_sealed_segment_emptied_kvd_does_what_kvfsck_says(self):
        # Whatever the verdict on the shape above, kvd follows it, and
        # never serves a wrong value.
        d = self.damaged("missing: sealed segment emptied")
        lost = {record_key(read(os.path.join(self.base["multi"], seg_name(3))), o).decode()
                for o, _, _, _ in data_records(read(os.path.join(self.base["multi"], seg_name(3))))}
        self.assertEqual(len(lost), 27)
        if self.kvd_json(d)["starts"]:
            self.expect_kvd_serves(d, self.multi_values(but=lost) | {k: None for k in lost})
        else:
            self.expect_kvd_refuses(d, [seg_name(3)])

    def test_sealed_segment_truncated_at_a_record_boundary(self):
        d = self.damaged("missing: sealed segment truncated at a record boundary")
        size = os.path.getsize(os.path.join(d, seg_name(3)))
        recs = records(read(os.path.join(self.base["multi"], seg_name(3))))
        self.assertEqual(size, recs[-3][0])
        self.expect_problems(d, [(seg_name(3), size, 0, "missing data", "sealed segment has no trailer"),
                                 (seg_name(3), size, 0, "missing data", "not the size the next segment recorded"),
                                 (hint_name(3), 0, self.size(hint_name(3)), "bad hint file", "stale")],
                             starts=False)
        self.refused(d, [seg_name(3)])

    def check_hint_only(self, d, state):
        """The segment is intact and only its hint is bad: kvd starts,
        rejects the hint, scans the segment, serves every key, and writes
        the hint again."""
        self.expect_one_problem(d, hint_name(3), 0, self.size(hint_name(3)), "bad hint file", state, starts=True)
        self.assertEqual(self.kvd_json(d)["segments_from_hints"], 4)
        d = self.on_a_copy(d)
        s = self.expect_kvd_serves(d, self.multi_values())
        self.assertRegex(s.read_log(), r"1 rejected")
        self.assertEqual(kvfsck(d).rc, CLEAN)
        self.assertEqual(read(os.path.join(d, hint_name(3))), read(os.path.join(self.base["multi"], hint_name(3))))

    def test_stale_hint_from_another_log(self):
        d = self.damaged("hint: stale, from another log")
        self.check_hint_only(d, "stale")

    def test_hint_of_another_segment_copied_over(self):
        d = self.damaged("hint: another segment's hint copied over it")
        self.check_hint_only(d, "damaged")

    def test_newest_segment_deleted(self):
        # Segment 5 now is the newest and ends with a trailer: a segment
        # followed it. Its hint file shows the same.
        d = self.damaged("missing: newest segment deleted")
        before = snapshot(d)
        r = kvfsck(d)
        self.assertEqual(r.rc, LEFT, r)
        got = {(os.path.basename(p["path"]), p["kind"], p["reason"]) for p in text_problems(r.out)}
        self.assertEqual(got, {(seg_name(5), "missing data", "segment is sealed but the segment after it is missing")})
        self.assertEqual(snapshot(d), before)
        self.refused(d, ["0000000005."])

    def test_newest_segment_deleted_is_one_problem(self):
        # The one missing segment is one problem, at the trailer of the
        # segment before it (its hint file shows the same).
        d = self.damaged("missing: newest segment deleted")
        self.expect_problems(d, [(seg_name(5), self.size(seg_name(5)), 0, "missing data",
                                  "segment is sealed but the segment after it is missing")], starts=False)


    def test_refused_start_writes_no_hint_file(self):
        # Segment 1 has no hint file and segment 3 is deleted. kvd scans
        # segment 1 before it refuses at segment 4; the hint it built is
        # written only once it knows it opens, so the refused start leaves
        # the directory as it was.
        d = self.damaged("missing: sealed segment deleted with its hint")
        os.unlink(os.path.join(d, hint_name(1)))
        self.expect_one_problem(d, seg_name(4), 0, 32, "missing data", starts=False)
        self.expect_kvd_refuses(d, [seg_name(4)])


class TestAgreement(ShapeBase):
    """kvfsck's verdict is kvd's: for every damage shape of this file, its
    --json "kvd.starts" is whether a real kvd starts on the directory, and
    a refused start changes no file."""

    BASES = ALL_BASES

    def test_kvfsck_verdict_is_what_kvd_does(self):
        self.assertGreaterEqual(len(SHAPES), 30)
        wrong = []
        for i, name in enumerate(sorted(SHAPES)):
            with self.subTest(shape=name):
                d = self.damaged(name, to="a%02d" % i)
                j = self.kvd_json(d)
                before = snapshot(d)
                s, rc, log = self.try_kvd(d)
                if s is not None:
                    self.stop_kvd(s)
                else:
                    self.assertNotEqual(rc, 0)
                    # A refused start changes no file (LOCK aside, which
                    # every start creates).
                    after = snapshot(d)
                    after.pop("LOCK", None)
                    before.pop("LOCK", None)
                    self.assertEqual(after, before, "%s: a refused start changed the directory" % name)
                    self.assertIn(j["message"] or "(kvfsck said kvd starts)", log, name)
                if j["starts"] != (s is not None):
                    wrong.append((name, j["starts"], s is not None, log[-500:]))
                shutil.rmtree(d)
        self.assertEqual(wrong, [], "shapes where kvfsck's verdict (starts) is not what kvd did")


class TestJsonAndUsage(Base):
    BASES = {"five": FIVE, "crash": CRASH, "multi": MULTI}

    def test_json_agrees_with_the_text_report(self):
        d = self.copy("multi")
        p = os.path.join(d, SEG1)
        b = bytearray(read(p))
        off = data_records(bytes(b))[1][0]
        b[off + 30] ^= 0x01
        write(p, bytes(b))
        segs = sorted(n for n in os.listdir(d) if n.endswith(".seg"))
        with open(os.path.join(d, segs[-1]), "ab") as f:
            f.write(b"\x5a" * 10)
        t = kvfsck(d)
        r = kvfsck("--json", d)
        self.assertEqual(r.rc, LEFT, r)
        self.assertEqual(t.rc, r.rc)
        j = json.loads(r.out)  # the whole of stdout is one document
        self.assertEqual(j["dir"], d)
        self.assertEqual(j["exit_code"], LEFT)
        self.assertFalse(j["repaired"])
        self.assertIsNone(j["error"])
        self.assertEqual([s["file"] for s in j["segments"]], segs)
        jp = [(s["path"], p["offset"], p["length"], p["kind"], p["reason"])
              for s in j["segments"] for p in s["problems"]]
        tp = [(p["path"], int(p["offset"]), int(p["length"]), p["kind"], p["reason"]) for p in text_problems(t.out)]
        self.assertEqual(jp, tp)
        self.assertEqual(len(jp), 2)
        sm = j["summary"]
        for key, label in (("segments", "segments"), ("log_bytes", "log bytes"), ("records", "records"),
                           ("live_keys", "live keys"), ("tombstones", "tombstones"),
                           ("live_bytes", "live bytes"), ("dead_bytes", "dead bytes"), ("problems", "problems")):
            self.assertEqual(sm[key], text_field(t.out, label), key)
        self.assertEqual(sm["problems_by_kind"], {"torn tail": 1, "mid-log corruption": 0,
                                                  "sealed-segment corruption": 1, "sequence going back": 0,
                                                  "bad hint file": 0, "missing data": 0})
        # the damage is in a sealed segment with a hint file: kvd starts
        self.assertEqual(sm["kvd"], {"starts": True, "torn_bytes_cut": 10, "segments_from_hints": len(segs) - 1,
                                     "rotations_completed": 0, "message": None})
        self.assertEqual(sum(s["bytes"] for s in j["segments"]), sm["log_bytes"])

    def test_json_of_a_repair(self):
        d = self.copy("crash")
        p = os.path.join(d, SEG1)
        write(p, read(p) + b"\x5a" * 50)
        r = kvfsck("--json", "--repair", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        j = json.loads(r.out)
        self.assertTrue(j["repaired"])
        self.assertEqual(j["exit_code"], REPAIRED)
        self.assertEqual(j["summary"]["problems"], 1)
        self.assertEqual(j["repair"]["action"], "cut torn tail")
        self.assertEqual(j["repair"]["torn_files"], [SEG1 + ".%d.torn" % CRASH_END])
        self.assertEqual(j["after"]["summary"]["problems"], 0)

    def test_json_escapes_strings(self):
        d = os.path.join(self.tmp, 'odd "dir"\\\ttab\x01\xe9')
        shutil.copytree(self.base["five"], d)
        write(os.path.join(os.fsencode(d), b"bad\xff\x02name"), b"")
        r = subprocess.run([kvfsck_bin(), "--json", os.fsencode(d)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env(), timeout=60)
        self.assertEqual(r.returncode, CLEAN, r.stderr)
        j = json.loads(r.stdout.decode("utf-8"))  # valid UTF-8 and valid JSON
        self.assertEqual(j["dir"], d)
        self.assertEqual(j["summary"]["other_files"], ["bad\ufffd\x02name"])

    def test_json_of_a_missing_directory(self):
        r = kvfsck("--json", os.path.join(self.tmp, "nope"))
        self.assertEqual(r.rc, OPERROR, r)
        j = json.loads(r.out)
        self.assertEqual(j["exit_code"], OPERROR)
        self.assertIn("No such file or directory", j["error"])

    def test_missing_directory_exits_8(self):
        r = kvfsck(os.path.join(self.tmp, "nope"))
        self.assertEqual(r.rc, OPERROR, r)
        self.assertIn("cannot read data directory", r.err)
        r = kvfsck("--repair", "--yes", os.path.join(self.tmp, "nope"))
        self.assertEqual(r.rc, OPERROR, r)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "nope")))

    def test_unreadable_segment_exits_8(self):
        d = self.copy()
        os.rename(os.path.join(d, SEG1), os.path.join(d, "elsewhere"))
        os.mkdir(os.path.join(d, SEG1))  # a directory where a segment should be
        r = kvfsck(d)
        self.assertEqual(r.rc, OPERROR, r)
        self.assertIn("cannot read %s/%s" % (d, SEG1), r.err)

    def test_segment_of_another_format_version_exits_8(self):
        d = self.copy()
        # version 3: a valid header (magic, CRC) of a version this build does not read
        write(os.path.join(d, seg_name(3)), seg_header_v2(3, 2, 32, 1700000000, version=3))
        before = snapshot(d)
        r = kvfsck(d)
        self.assertEqual(r.rc, OPERROR, r)
        self.assertIn("on-disk format version this build cannot read", r.err)
        r = kvfsck("--repair", "--salvage", "--yes", d)
        self.assertEqual(r.rc, OPERROR, r)
        before["LOCK"] = b""
        self.assertEqual(snapshot(d), before)

    def test_usage_errors_exit_16(self):
        d = self.copy()
        for args in ([], [d, d], ["--bogus", d], ["--salvage", d], ["--repair=yes", d], ["-x", d]):
            r = kvfsck(*args)
            self.assertEqual(r.rc, USAGE, (args, r))
            self.assertIn("kvfsck --help", r.err)
            self.assertEqual(r.out, "")

    def test_help_and_version(self):
        r = kvfsck("--help")
        self.assertEqual(r.rc, CLEAN, r)
        for s in ("Usage: kvfsck [OPTIONS] DIR", "--repair", "--salvage", "--yes", "--json", "--version",
                  "Hint files (NNNNNNNNNN.hint)", "bad hint file", "missing\ndata", "what kvd\nwill do",
                  "Exit status", " 16  usage error", "Examples:"):
            self.assertIn(s, r.out)
        r = kvfsck("--version")
        self.assertEqual((r.rc, r.out), (CLEAN, "kvfsck 0.1.0\n"))


if __name__ == "__main__":
    unittest.main()
