"""
Self-test of the iotrace shim (iotrace.c) on a small child process (a
Python interpreter with the shim preloaded): every mutating call under the
watched directory is in the trace with its data, nothing outside it is,
concurrent writers from several threads are all recorded, the trace
replays to exactly the bytes on disk, and each fault kind fails the right
call with the right errno.

    /usr/bin/python3 -m unittest -v iotrace_selftest   (from tests/crash)
"""
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

from iotrace_lib import FsModel, compare_with_disk, parse_trace, shim_path

CHILD = textwrap.dedent(r"""
    import errno, os, sys, threading
    d, outside = sys.argv[1], sys.argv[2]
    res = []

    def attempt(name, fn):
        try:
            fn()
            res.append("%s ok" % name)
        except OSError as e:
            res.append("%s %s" % (name, errno.errorcode.get(e.errno, e.errno)))

    fd = os.open(os.path.join(d, "a"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    attempt("create2", lambda: os.close(os.open(os.path.join(d, "c2"), os.O_WRONLY | os.O_CREAT, 0o644)))
    attempt("write1", lambda: os.pwrite(fd, b"hello world", 0))
    attempt("write2", lambda: os.write(fd, b"XY"))            # at the file position (0)
    attempt("sync1", lambda: os.fdatasync(fd))
    attempt("write3", lambda: os.pwrite(fd, b"\0\n%binary\xff" * 50, 4000))
    attempt("trunc1", lambda: os.ftruncate(fd, 4100))
    attempt("fsync1", lambda: os.fsync(fd))
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    attempt("dirsync1", lambda: os.fsync(dfd))
    os.close(dfd)
    attempt("rename1", lambda: os.rename(os.path.join(d, "a"), os.path.join(d, "b c")))
    attempt("write4", lambda: os.pwrite(fd, b"after rename", 20))
    os.close(fd)
    attempt("unlink-missing", lambda: os.unlink(os.path.join(d, "nope")))
    g = os.open(os.path.join(d, "g"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # create 3
    attempt("append1", lambda: os.write(g, b"one"))
    attempt("append2", lambda: os.writev(g, [b"two", b"three"]))
    os.close(g)
    o = os.open(os.path.join(outside, "x"), os.O_WRONLY | os.O_CREAT, 0o644)
    attempt("outside", lambda: os.write(o, b"not traced") and os.fsync(o))
    os.close(o)

    def worker(i):
        f = os.open(os.path.join(d, "t%d" % i), os.O_WRONLY | os.O_CREAT, 0o644)
        for j in range(200):
            os.pwrite(f, (b"%d.%d;" % (i, j)) * (1 + j % 7), j * 64)
            if j % 20 == 0:
                os.fdatasync(f)
        os.close(f)
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts: t.start()
    for t in ts: t.join()
    tmp = os.path.join(d, "tmp")
    with open(tmp, "wb") as f:
        f.write(b"replace")
    os.replace(tmp, os.path.join(d, "g"))
    os.unlink(os.path.join(d, "t3"))
    print("\n".join(res))
""")


class ShimSelfTest(unittest.TestCase):
    def setUp(self):
        self.base = tempfile.mkdtemp(prefix="kvd-iotrace-")
        self.d = os.path.join(self.base, "watched")
        self.outside = os.path.join(self.base, "outside")
        os.makedirs(self.d)
        os.makedirs(self.outside)
        self.trace = os.path.join(self.base, "trace")

    def tearDown(self):
        shutil.rmtree(self.base, ignore_errors=True)

    def child(self, fail=None):
        env = dict(os.environ, LD_PRELOAD=shim_path(), KV_IOTRACE_DIR=self.d, KV_IOTRACE_OUT=self.trace)
        env.pop("KV_IOTRACE_FAIL", None)
        if fail:
            env["KV_IOTRACE_FAIL"] = fail
        p = subprocess.run([sys.executable, "-c", CHILD, self.d, self.outside], env=env, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return dict(line.split(" ", 1) for line in p.stdout.split("\n") if line)

    def test_trace_is_complete(self):
        res = self.child()
        self.assertTrue(all(v == "ok" for k, v in res.items() if k != "unlink-missing"), res)
        self.assertEqual(res["unlink-missing"], "ENOENT")
        ev = parse_trace(self.trace)
        ops = [e.op for e in ev]
        for op in ("open", "write", "fdatasync", "fsync", "ftruncate", "rename", "unlink"):
            self.assertIn(op, ops)
        self.assertFalse([e for e in ev if any("outside" in f or f == "x" for f in e.f)],
                         "a call outside the directory was traced")
        w2 = [e for e in ev if e.op == "write" and e.data == b"XY"][0]
        self.assertEqual(w2.f[1], "0")  # write() at the file position
        ap = [e for e in ev if e.op == "write" and e.data == b"twothree"][0]
        self.assertEqual(ap.f[1], "3")  # O_APPEND: at the end
        dsync = [e for e in ev if e.op == "fsync" and e.f[1] == "1"]
        self.assertEqual(len(dsync), 1)
        self.assertEqual(len([e for e in ev if e.op == "fdatasync"]), 1 + 4 * 10)
        # seq numbers are consecutive and time never goes back
        self.assertEqual([e.seq for e in ev], list(range(1, len(ev) + 1)))
        self.assertTrue(all(a.t <= b.t for a, b in zip(ev, ev[1:])))
        model = FsModel()
        for e in ev:
            model.apply(e)
        self.assertEqual(compare_with_disk(model.volatile_files(), self.d), [])

    def test_fail_write(self):
        res = self.child("write:2:EIO")
        self.assertEqual(res["write1"], "ok")
        self.assertEqual(res["write2"], "EIO")
        self.assertEqual(res["write3"], "ok")
        ev = parse_trace(self.trace)
        bad = [e for e in ev if e.inj]
        self.assertEqual(len(bad), 1)
        self.assertEqual((bad[0].op, bad[0].ret, bad[0].err), ("write", -1, 5))
        with open(os.path.join(self.d, "b c"), "rb") as f:
            self.assertEqual(f.read(11), b"hello world")  # the failed write wrote nothing

    def test_fail_sync_and_sticky(self):
        res = self.child("fdatasync:1:ENOSPC,fsync:1+:EIO,dirsync:1:EIO")
        self.assertEqual(res["sync1"], "ENOSPC")
        self.assertEqual(res["fsync1"], "EIO")
        self.assertEqual(res["dirsync1"], "EIO")
        ev = parse_trace(self.trace)
        self.assertEqual(sorted(e.op for e in ev if e.inj), ["fdatasync", "fsync", "fsync"])

    def test_short_write_then_error(self):
        res = self.child("write:3:ENOSPC:7")
        # the pwrite of 500 bytes wrote 7 and returned 7 (a short write, no error)
        self.assertEqual(res["write3"], "ok")
        self.assertEqual(res["write4"], "ENOSPC")  # the next write to that descriptor
        ev = parse_trace(self.trace)
        short = [e for e in ev if e.inj == 2][0]
        self.assertEqual((short.ret, len(short.data), short.f[2]), (7, 7, "500"))

    def test_fail_create_rename_unlink(self):
        res = self.child("create:2:EIO,rename:1:EIO")
        self.assertEqual(res["create2"], "EIO")
        self.assertFalse(os.path.exists(os.path.join(self.d, "c2")))
        self.assertEqual(res["rename1"], "EIO")
        self.assertEqual(res["append1"], "ok")
        ev = parse_trace(self.trace)
        self.assertEqual(sorted(e.op for e in ev if e.inj), ["open", "rename"])

    def test_bad_spec_is_refused(self):
        env = dict(os.environ, LD_PRELOAD=shim_path(), KV_IOTRACE_DIR=self.d, KV_IOTRACE_FAIL="write:x:EIO")
        p = subprocess.run([sys.executable, "-c", "print(1)"], env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 97)
        self.assertIn("bad fault count", p.stderr)


if __name__ == "__main__":
    unittest.main()
