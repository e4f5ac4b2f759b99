"""
kvfsck against data directories written by a real kvd (127.0.0.1 only) and
then damaged, one named test per corruption shape (the shapes of
tests/unit/test_corruption.c), plus the repairs, the lock, --json and the
exit codes.

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


# ---- the format, as docs/format.md specifies it ----

def seg_name(i):
    return "%010d.seg" % i


def seg_header(seg_id, created=1700000000000):
    h = b"KVDS" + struct.pack("<HHIIQI", 1, 32, seg_id, 0, created, 0)
    return h + struct.pack("<I", zlib.crc32(h))


def records(data):
    """[(offset, length, type, seq)] of a clean segment's records."""
    out, pos = [], 32
    while pos + REC_HDR <= len(data):
        ln, typ = struct.unpack_from("<IB", data, pos + 8)
        seq = struct.unpack_from("<Q", data, pos + 24)[0]
        out.append((pos, ln, typ, seq))
        pos += ln
    assert pos == len(data), "not a clean segment"
    return out


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
                        r"(?P<kind>torn tail|mid-log corruption|sealed-segment corruption|sequence going back|bad hint file): "
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

def build_dir(workdir, name, fill, extra=()):
    """Runs kvd on <workdir>/<name>, calls fill(redis client), stops kvd
    cleanly; returns the data directory."""
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


def fill_mixed(c):
    for i in range(10):
        c.set("k%d" % i, "v%d" % i)           # 10 records
    c.delete("k0")                            # 1 record, 1 tombstone
    c.delete("k1", "k2")                      # 1 batch, 2 tombstones
    c.mset({"m1": "a", "m2": "b", "k3": "c"})  # 1 batch, 3 puts
    c.set("gone", "soon", px=1)               # 1 record, expired at check time
    c.set("later", "x", ex=100000)            # 1 record with a far expiry
    time.sleep(0.01)


class Base(unittest.TestCase):
    # name -> (fill, kvd flags); built once per class
    BASES = {"five": (fill_five, ())}

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="kvfscktest-")
        cls.base = {}
        try:
            for name, (fill, extra) in cls.BASES.items():
                cls.base[name] = build_dir(cls.work, name, fill, extra)
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

    def copy(self, name="five"):
        d = os.path.join(self.tmp, "data")
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

    # A check that must find exactly one problem, change nothing, exit 4.
    def expect_one_problem(self, d, seg, offset, length, kind, reason=None):
        before = snapshot(d)
        r = kvfsck(d)
        self.assertEqual(r.rc, LEFT, r)
        ps = text_problems(r.out)
        self.assertEqual(len(ps), 1, r)
        p = ps[0]
        self.assertEqual(p["path"], os.path.join(d, seg), r)
        self.assertEqual(int(p["offset"]), offset, r)
        if length is not None:
            self.assertEqual(int(p["length"]), length, r)
        self.assertEqual(p["kind"], kind, r)
        if reason:
            self.assertIn(reason, p["reason"], r)
        self.assertEqual(snapshot(d), before, "a read-only check changed the directory")
        return r


class TestClean(Base):
    BASES = {"five": (fill_five, ()), "mixed": (fill_mixed, ()), "multi": (fill_multi, ("--segment-size", "4kb"))}

    def test_clean_directory_exits_0_with_right_counts(self):
        d = self.copy("mixed")
        before = snapshot(d)
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertIn("result: clean", r.out)
        self.assertEqual(text_problems(r.out), [])
        self.assertEqual(text_field(r.out, "segments"), 1)
        self.assertEqual(text_field(r.out, "records"), 15)  # 10 + 1 + 1 + 1 + 1 + 1
        self.assertEqual(text_field(r.out, "tombstones"), 3)
        self.assertEqual(text_field(r.out, "expired"), 1)
        # k3..k9 (7), m1, m2, later; k0..k2 deleted, gone expired
        self.assertEqual(text_field(r.out, "live keys"), 10)
        self.assertRegex(r.out, r"records:\s+15 \(2 batches; 18 entries")
        log = text_field(r.out, "log bytes")
        self.assertEqual(log, os.path.getsize(os.path.join(d, SEG1)))
        self.assertEqual(text_field(r.out, "dead bytes"), log - text_field(r.out, "live bytes") - 32)
        self.assertRegex(r.out, r"hint files:\s+0 \(0 valid, 0 bad, 0 not checked, 0 without a segment\); 0 sealed segments without one")
        self.assertRegex(r.out, r"LOCK:\s+present")
        self.assertEqual(snapshot(d), before)

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
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)  # recovery ignores these files, and so does the check
        self.assertIn(".torn:        2: 0000000001.seg.272.torn, 0000000001.seg.272.torn.1", r.out)
        self.assertIn(".discarded:   1: 0000000002.seg.discarded", r.out)
        self.assertIn("other files:  1: notes.txt", r.out)
        j = json.loads(kvfsck("--json", d).out)
        self.assertEqual(j["summary"]["torn_files"], ["0000000001.seg.272.torn", "0000000001.seg.272.torn.1"])
        self.assertEqual(j["summary"]["discarded_files"], ["0000000002.seg.discarded"])
        self.assertEqual(j["summary"]["other_files"], ["notes.txt"])
        self.assertTrue(j["summary"]["lock_file"])

    def test_empty_directory_is_clean(self):
        d = os.path.join(self.tmp, "empty")
        os.mkdir(d)
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertEqual(text_field(r.out, "segments"), 0)


class TestShapes(Base):
    """One test per corruption shape; each checks file, offset, kind and
    exit code 4, and that the directory is byte-for-byte unchanged."""

    BASES = {"five": (fill_five, ()), "batch": (fill_batch, ()), "multi": (fill_multi, ("--segment-size", "4kb"))}

    def seg(self, d, name=SEG1):
        p = os.path.join(d, name)
        return p, read(p)

    def test_base_layout(self):
        # five puts of 48 bytes at 32, 80, 128, 176, 224: the layout of
        # tests/unit/test_corruption.c, here written by kvd itself
        p, data = self.seg(self.copy())
        self.assertEqual([(o, ln, s) for o, ln, _, s in records(data)],
                         [(32 + 48 * i, 48, i + 1) for i in range(5)])

    def test_truncated_header_is_torn_tail(self):
        d = self.copy()
        p, data = self.seg(d)
        write(p, data + data[32:52])  # 20 of the 44 header bytes, the last 3 zeros (klen's high bytes)
        r = self.expect_one_problem(d, SEG1, 272, 17, "torn tail", "incomplete record header")
        self.assertIn("unwritten:    3 ", r.out)
        self.assertEqual(text_field(r.out, "live keys"), 5)
        self.assertIn("kvfsck --repair " + d, r.out)

    def test_truncated_payload_is_torn_tail(self):
        d = self.copy()
        p, data = self.seg(d)
        write(p, data + data[32:80 - 3])  # header whole, payload cut
        self.expect_one_problem(d, SEG1, 272, 45, "torn tail", "record runs past end of file")

    def test_zero_filled_tail_is_unwritten_space_not_a_problem(self):
        # What kvd leaves after a crash with --preallocate yes: zeros past
        # the last record of the newest segment, which it cuts at start.
        d = self.copy()
        p, data = self.seg(d)
        write(p, data + b"\0" * 4096)
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertEqual(text_field(r.out, "problems"), 0)
        self.assertIn("unwritten:    4096 ", r.out)
        self.assertEqual(text_field(r.out, "dead bytes"), 0)
        j = json.loads(kvfsck("--json", d).out)
        self.assertEqual(j["summary"]["unwritten_bytes"], 4096)
        self.assertEqual(j["segments"][-1]["unwritten_bytes"], 4096)
        self.assertEqual(read(p), data + b"\0" * 4096)  # read-only: nothing cut

    def test_zeros_ending_a_sealed_segment_are_corruption(self):
        d = self.copy()
        p, data = self.seg(d)
        write(p, data + b"\0" * 64)
        write(os.path.join(d, seg_name(2)), seg_header(2))
        self.expect_one_problem(d, SEG1, 272, 64, "sealed-segment corruption", "unwritten zero-filled space")

    def test_garbage_appended_is_torn_tail(self):
        d = self.copy()
        p, data = self.seg(d)
        x, junk = 12345, bytearray()
        for _ in range(300):
            x = (x * 1103515245 + 12345) & 0xffffffff
            junk.append((x >> 16) & 0xff)
        write(p, data + bytes(junk))
        self.expect_one_problem(d, SEG1, 272, 300, "torn tail")

    def test_bit_flip_in_header_field_mid_log_is_corruption(self):
        d = self.copy()
        p, data = self.seg(d)
        b = bytearray(data)
        b[128 + 24] ^= 0x04  # sequence number of k3
        write(p, bytes(b))
        r = self.expect_one_problem(d, SEG1, 128, 48, "mid-log corruption", "record header checksum")
        self.assertIn("(valid records follow)", r.out)
        self.assertIn("kvfsck --repair --salvage " + d, r.out)
        self.assertEqual(text_field(r.out, "records"), 4)

    def test_bit_flip_in_key_mid_log_is_corruption(self):
        d = self.copy()
        p, data = self.seg(d)
        b = bytearray(data)
        b[128 + REC_HDR] ^= 0x01  # 'k' of k3
        write(p, bytes(b))
        self.expect_one_problem(d, SEG1, 128, 48, "mid-log corruption", "record checksum mismatch")

    def test_bit_flip_in_value_mid_log_is_corruption(self):
        d = self.copy()
        p, data = self.seg(d)
        b = bytearray(data)
        b[80 + REC_HDR + 3] ^= 0x80  # '2' of v2
        write(p, bytes(b))
        self.expect_one_problem(d, SEG1, 80, 48, "mid-log corruption", "record checksum mismatch")

    def test_bit_flip_in_length_mid_log_followed_by_valid_records_is_corruption(self):
        # len += 65536: the record seems to run past end of file, which
        # looks like a torn tail; its header checksum and the valid records
        # after it make it mid-log corruption.
        d = self.copy()
        p, data = self.seg(d)
        b = bytearray(data)
        b[128 + 8 + 2] ^= 0x01
        write(p, bytes(b))
        r = self.expect_one_problem(d, SEG1, 128, 48, "mid-log corruption", "record header checksum")
        self.assertEqual(text_field(r.out, "records"), 4)
        self.assertEqual(text_field(r.out, "live keys"), 4)

    def test_bit_flip_in_last_record_of_newest_segment_is_torn_tail(self):
        d = self.copy()
        p, data = self.seg(d)
        b = bytearray(data)
        b[224 + REC_HDR + 2] ^= 0x02
        write(p, bytes(b))
        self.expect_one_problem(d, SEG1, 224, 48, "torn tail", "record checksum mismatch")

    def test_corrupt_sealed_segment_is_sealed_segment_corruption(self):
        # A short record at the end of a sealed segment is not a torn tail:
        # that segment was complete when it was sealed.
        d = self.copy("multi")
        p, data = self.seg(d)
        last = records(data)[-1]
        write(p, data[:last[0] + last[1] - 10])
        r = self.expect_one_problem(d, SEG1, last[0], last[1] - 10, "sealed-segment corruption",
                                    "record runs past end of file")
        self.assertIn("kvfsck --repair --salvage", r.out)

    def test_bit_flip_in_sealed_segment_is_sealed_segment_corruption(self):
        d = self.copy("multi")
        p, data = self.seg(d)
        off, ln, _, _ = records(data)[2]
        b = bytearray(data)
        b[off + ln - 1] ^= 0x10
        write(p, bytes(b))
        self.expect_one_problem(d, SEG1, off, ln, "sealed-segment corruption", "record checksum mismatch")

    def test_batch_torn_in_the_middle_is_torn_tail_and_applies_none_of_it(self):
        d = self.copy("batch")
        p, data = self.seg(d)
        recs = records(data)
        self.assertEqual([t for _, _, t, _ in recs], [1, 1, 3])
        boff, blen = recs[2][0], recs[2][1]
        # The batch header and its first two entries (complete, valid-looking
        # records) reach the disk, the rest does not.
        cut = boff + REC_HDR + 2 * 48 + 5
        write(p, data[:cut])
        r = self.expect_one_problem(d, SEG1, boff, cut - boff, "torn tail", "record runs past end of file")
        self.assertEqual(text_field(r.out, "records"), 2)
        self.assertEqual(text_field(r.out, "live keys"), 2)
        self.assertLess(cut, boff + blen)

    def test_whole_batch_counts_its_entries(self):
        d = self.copy("batch")
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertRegex(r.out, r"records:\s+3 \(1 batches; 5 entries")
        self.assertEqual(text_field(r.out, "live keys"), 5)

    def test_sequence_going_back_across_segments(self):
        # Segment 3 repeats segment 1's records (with a valid header of its
        # own): every record's sequence number goes back behind the log.
        d = self.copy("five")
        _, data = self.seg(d)
        write(os.path.join(d, seg_name(3)), seg_header(3) + data[32:])
        before = snapshot(d)
        r = kvfsck(d)
        self.assertEqual(r.rc, LEFT, r)
        ps = text_problems(r.out)
        self.assertEqual([(os.path.basename(p["path"]), int(p["offset"]), p["kind"]) for p in ps],
                         [(seg_name(3), 32 + 48 * i, "sequence going back") for i in range(5)])
        self.assertEqual(text_field(r.out, "records"), 5)
        self.assertEqual(snapshot(d), before)

    def test_bad_segment_header_of_newest_segment_with_nothing_after_is_torn_tail(self):
        d = self.copy()
        write(os.path.join(d, seg_name(2)), b"KVDS\x01")
        self.expect_one_problem(d, seg_name(2), 0, 5, "torn tail", "segment shorter than its header")


class TestRepair(Base):
    BASES = {"five": (fill_five, ()), "multi": (fill_multi, ("--segment-size", "4kb"))}

    def damage_tail(self, d):
        p = os.path.join(d, SEG1)
        data = read(p)
        write(p, data + b"\x5a" * 100)  # garbage: zeros would be unwritten space
        return data

    def damage_mid(self, d, name=SEG1, rec=2):
        p = os.path.join(d, name)
        data = read(p)
        off = records(data)[rec][0]
        b = bytearray(data)
        b[off + REC_HDR] ^= 0x01
        write(p, bytes(b))
        return bytes(b)

    def test_repair_cuts_a_torn_tail_and_keeps_the_bytes(self):
        d = self.copy()
        clean = self.damage_tail(d)
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        self.assertIn("result: all 1 problem repaired", r.out)
        self.assertEqual(read(os.path.join(d, SEG1)), clean)
        torn = os.path.join(d, SEG1 + ".272.torn")
        self.assertEqual(read(torn), b"\x5a" * 100)
        self.assertIn("the cut bytes are in " + torn, r.out)
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertIn(".torn:        1: 0000000001.seg.272.torn", r.out)

    def test_repair_never_overwrites_a_torn_file(self):
        d = self.copy()
        self.damage_tail(d)
        write(os.path.join(d, SEG1 + ".272.torn"), b"older")
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        self.assertEqual(read(os.path.join(d, SEG1 + ".272.torn")), b"older")
        self.assertEqual(read(os.path.join(d, SEG1 + ".272.torn.1")), b"\x5a" * 100)

    def test_repair_refuses_mid_log_corruption_without_salvage(self):
        d = self.copy()
        self.damage_mid(d)
        before = snapshot(d)
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, LEFT, r)
        self.assertIn("unless --salvage", r.out)
        self.assertEqual(snapshot(d), before)

    def test_repair_without_yes_off_a_terminal_changes_nothing(self):
        d = self.copy()
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
        d = self.copy()
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
        newest = segs[-1]
        damaged = self.damage_mid(d, SEG1, rec=3)  # sealed-segment corruption
        tail_before = read(os.path.join(d, newest))
        with open(os.path.join(d, newest), "ab") as f:
            f.write(b"\x5a" * 64)                   # and a torn tail
        before = snapshot(d)
        r0 = kvfsck(d)
        self.assertEqual(r0.rc, LEFT, r0)
        self.assertEqual(text_field(r0.out, "records"), 119)

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
        self.assertEqual(after[newest], tail_before)
        self.assertFalse([n for n in after if n.endswith(".salvage")])
        # the rewrite of segment 1 is its records minus the damaged one
        kept = [damaged[o:o + ln] for o, ln, _, _ in records(damaged)]
        del kept[3]
        self.assertEqual(after[SEG1], damaged[:32] + b"".join(kept))

        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertEqual(text_field(r.out, "records"), 119)
        self.assertIn(".orig:        2:", r.out)

        # kvd opens it and serves every valid record
        s = self.start_kvd(d)
        c = s.client()
        self.assertEqual(c.dbsize(), 119)
        self.assertIsNone(c.get("key:003"))
        for i in range(120):
            if i != 3:
                self.assertEqual(c.get("key:%03d" % i), b"x" * 60)
        c.close()
        self.stop_kvd(s)

    def test_salvage_drops_records_whose_sequence_goes_back(self):
        d = self.copy("five")
        data = read(os.path.join(d, SEG1))
        stale = bytearray(data[32:80])  # k1=v1, seq 1
        write(os.path.join(d, seg_name(2)), seg_header(2) + bytes(stale))
        r = kvfsck("--repair", "--salvage", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        self.assertEqual(read(os.path.join(d, seg_name(2))), seg_header(2))
        self.assertEqual(read(os.path.join(d, seg_name(2) + ".orig")), seg_header(2) + bytes(stale))
        self.assertEqual(kvfsck(d).rc, CLEAN)
        s = self.start_kvd(d)
        c = s.client()
        self.assertEqual(c.dbsize(), 5)
        c.close()
        self.stop_kvd(s)

    def test_repair_while_kvd_holds_the_directory_exits_8(self):
        d = self.copy()
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
        d = self.copy()
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertIn("nothing to repair", r.out)


class TestHintFiles(Base):
    """Hint files (NNNNNNNNNN.hint, docs/format.md): every one is checked
    against its segment; a damaged, stale or disagreeing one is a problem
    that --repair rebuilds; one without a segment is listed only."""
    BASES = {"multi": (fill_multi, ("--segment-size", "4kb"))}

    HINT_HDR = 168

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
        bad[self.HINT_HDR + 10] ^= 0x01
        write(p, bytes(bad))
        r = self.expect_one_problem(d, name, 0, len(orig), "bad hint file", "damaged")
        self.assertIn("The only problems are bad hint files", r.out)
        self.repair_restores(d, name, orig)

    def test_stale_hint_is_a_problem_and_repair_rebuilds_it(self):
        d = self.copy("multi")
        name = self.hints(d)[1]
        seg = os.path.join(d, name[:-5] + ".seg")
        data = read(seg)
        last = records(data)[-1]
        # The segment without its last record: still a clean segment, but
        # no longer what its hint describes.
        write(seg, data[:last[0]])
        hint_len = os.path.getsize(os.path.join(d, name))
        self.expect_one_problem(d, name, 0, hint_len, "bad hint file", "stale")
        r = kvfsck("--repair", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        self.assertEqual(kvfsck(d).rc, CLEAN)

    def test_hint_that_disagrees_with_its_segment_is_a_problem(self):
        d = self.copy("multi")
        name = self.hints(d)[0]
        p = os.path.join(d, name)
        orig = read(p)
        bad = bytearray(orig)
        e = self.HINT_HDR
        self.assertEqual(bad[e], 1)  # a put
        # A well-formed hint with a valid CRC that claims an expiry the
        # segment's record does not have.
        struct.pack_into("<Q", bad, e + 32, 4102444800000)
        struct.pack_into("<I", bad, len(bad) - 4, zlib.crc32(bytes(bad[:-4])))
        write(p, bytes(bad))
        self.expect_one_problem(d, name, 0, len(orig), "bad hint file", "disagrees with its segment")
        self.repair_restores(d, name, orig)

    def test_hint_without_a_segment_is_listed_and_removed_by_kvd(self):
        d = self.copy("multi")
        stray = os.path.join(d, "0000000099.hint")
        shutil.copy(os.path.join(d, self.hints(d)[0]), stray)
        r = kvfsck(d)
        self.assertEqual(r.rc, CLEAN, r)
        self.assertRegex(r.out, r"1 without a segment")
        j = json.loads(kvfsck("--json", d).out)
        self.assertIn({"file": "0000000099.hint", "segment": 99, "bytes": os.path.getsize(stray),
                       "state": "no such segment", "problem": False}, j["summary"]["hint_files"])
        self.stop_kvd(self.start_kvd(d))
        self.assertFalse(os.path.exists(stray))
        self.assertEqual(kvfsck(d).rc, CLEAN)


class TestJsonAndUsage(Base):
    BASES = {"five": (fill_five, ()), "multi": (fill_multi, ("--segment-size", "4kb"))}

    def test_json_agrees_with_the_text_report(self):
        d = self.copy("multi")
        p = os.path.join(d, SEG1)
        b = bytearray(read(p))
        off = records(bytes(b))[1][0]
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
                                                  "bad hint file": 0})
        self.assertEqual(sum(s["bytes"] for s in j["segments"]), sm["log_bytes"])

    def test_json_of_a_repair(self):
        d = self.copy()
        p = os.path.join(d, SEG1)
        write(p, read(p) + b"\x5a" * 50)
        r = kvfsck("--json", "--repair", "--yes", d)
        self.assertEqual(r.rc, REPAIRED, r)
        j = json.loads(r.out)
        self.assertTrue(j["repaired"])
        self.assertEqual(j["exit_code"], REPAIRED)
        self.assertEqual(j["summary"]["problems"], 1)
        self.assertEqual(j["repair"]["action"], "cut torn tail")
        self.assertEqual(j["repair"]["torn_files"], [SEG1 + ".272.torn"])
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
        h = b"KVDS" + struct.pack("<HHIIQI", 2, 32, 2, 0, 1700000000000, 0)
        write(os.path.join(d, seg_name(2)), h + struct.pack("<I", zlib.crc32(h)))
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
                  "Hint files (NNNNNNNNNN.hint)", "bad hint file", "Exit status", " 16  usage error", "Examples:"):
            self.assertIn(s, r.out)
        r = kvfsck("--version")
        self.assertEqual((r.rc, r.out), (CLEAN, "kvfsck 0.1.0\n"))


if __name__ == "__main__":
    unittest.main()
