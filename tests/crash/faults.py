"""
I/O errors and a full disk, on the REAL kvd binary.

I/O errors: kvd runs under the iotrace shim (iotrace.c) with
KV_IOTRACE_FAIL set to fail the Nth write, fdatasync, directory fsync or
file creation in its data directory, for several N, while two clients
write. kvd must enter fail-stop: the failing group answered
"-IOERR write failed: <error>", every later write "-IOERR write refused:
<reason>", INFO persistence failstop:1 with a reason naming the call and
the error, and reads keep returning exactly the acknowledged values. After
a clean stop, a restart without the fault must recover every write
acknowledged before the failure (a write whose group failed may be there
or not: its state is unknown), accept writes again, and leave a directory
kvfsck passes. A fault during start-up must make kvd exit 1 with a message,
and the next start without it must work.

Full disk: the test makes a private mount namespace (unshare -m, as root)
with a 2 MiB tmpfs holding a filler file and kvd's data directory, and
fills it with writes. Writes must then fail with "No space left on device",
reads go on, INFO says why (disk full), nothing acknowledged is lost; a
restart while the disk is still full may be refused (documented: the torn
tail cannot be saved) but loses nothing; after the filler is deleted, kvd
starts, serves every acknowledged key and takes writes again. Skipped, with
the reason printed, where unshare or mount is not permitted.

Env: KV_FAULTS_SPECS (';'-separated OP:N[+]:ERRNO[:K] faults, replacing the
default list), KV_FAULTS_SWEEP (also fail write N and fdatasync N for
every N from 1 to this), KV_FAULTS_OPS (requests per client, default 120).

    /usr/bin/python3 -m unittest -v faults        (from tests/crash)
"""
import errno as errno_mod
import json
import os
import shutil
import struct
import signal
import subprocess
import sys
import tempfile
import unittest
import zlib

import redis

from iotrace_lib import (KvdServer, Ledger, TracedKvd, check_recovered, env_int, info, log, parse_trace, read_store,
                         run_kvfsck, run_workload, shim_env)

# These run with --preallocate no, so that every counted write is a
# request's (test_failed_preallocation covers the zero-fill's writes).
# kvd's first I/O on an empty directory (the shim counts only calls in the
# data directory): create LOCK (create 1), fsync the directory (dirsync 1),
# create segment 1 (create 2), write its header (write 1), fdatasync it
# (fdatasync 1), fsync the directory (dirsync 2), fdatasync the active
# segment before serving (fdatasync 2). The first client write is write 2,
# its fdatasync fdatasync 3.
RUNTIME_FAULTS = [
    # (spec, extra kvd flags, what fails)
    ("write:2:EIO", (), "write"),
    ("write:5:EIO", (), "write"),
    ("write:23:EIO", (), "write"),
    ("write:9:ENOSPC:40", (), "write"),        # a short write of 40 bytes, then ENOSPC
    ("fdatasync:3:EIO", (), "fdatasync"),
    ("fdatasync:8:EIO", (), "fdatasync"),
    ("fdatasync:17:ENOSPC", (), "fdatasync"),
    ("sync:6+:EIO", (), "fdatasync"),           # every sync from the 6th on
    ("create:3:ENOSPC", ("--segment-size", "4kb"), "creating segment"),  # segment 2
    ("dirsync:3:EIO", ("--segment-size", "4kb"), "creating segment"),    # its directory fsync
    ("write:14:EIO", ("--segment-size", "4kb"), "write"),
]
STARTUP_FAULTS = ["write:1:EIO", "fdatasync:1:EIO", "fdatasync:2:EIO", "dirsync:1:EIO", "create:2:ENOSPC"]

ERRNAMES = {"EIO": errno_mod.EIO, "ENOSPC": errno_mod.ENOSPC}


def fault_errno(spec):
    name = spec.split(":")[2]
    return ERRNAMES.get(name) or int(name)


def runtime_faults():
    specs = os.environ.get("KV_FAULTS_SPECS")
    if specs:
        out = []
        for s in specs.split(";"):
            s = s.strip()
            if s:
                op = s.split(":")[0]
                out.append((s, ("--segment-size", "4kb") if op in ("create", "dirsync") else (),
                            {"create": "creating segment", "dirsync": "creating segment", "write": "write"}
                            .get(op, "fdatasync")))
        return out
    out = list(RUNTIME_FAULTS)
    sweep = env_int("KV_FAULTS_SWEEP", 0)
    for n in range(2, sweep + 1):
        out.append(("write:%d:EIO" % n, (), "write"))
        out.append(("fdatasync:%d:EIO" % (n + 1), (), "fdatasync"))
    return out


def sanitizer_check(tc, srv):
    rep = srv.sanitizer_reports()
    tc.assertFalse(rep, "sanitizer report from kvd: %s\n%s" % (rep, srv.read_stderr()[-4000:]))


def expected_values(ledger):
    """key -> value of the last acknowledged write (None = absent)."""
    out = {}
    for k, h in ledger.histories().items():
        out[k] = None
        for op, v in h:
            if op.ack_pos is not None:
                out[k] = v
    return out


class IOErrors(unittest.TestCase):
    injected = 0

    def run_case(self, spec, extra, what):
        base = tempfile.mkdtemp(prefix="kvd-faults-")
        try:
            self._run_case(spec, ["--preallocate", "no"] + list(extra), what, base)
        finally:
            shutil.rmtree(base, ignore_errors=True)

    def _run_case(self, spec, extra, what, base):
        err = fault_errno(spec)
        strerr = os.strerror(err)
        datadir = os.path.join(base, "data")
        os.makedirs(datadir)
        trace = os.path.join(base, "trace")
        srv = TracedKvd(extra, env_extra=shim_env(datadir, trace, fail=spec), datadir=datadir,
                        workdir=os.path.join(base, "run1"))
        os.makedirs(srv.workdir)
        ledger = Ledger()
        try:
            srv.start()
            run_workload(srv, trace, ledger, 2, zlib.crc32(spec.encode()) & 0xffff, nops=env_int("KV_FAULTS_OPS", 120),
                         stop_on_error=True, after_error=2)
            errs = [o for o in ledger.ops if o.error is not None]
            self.assertTrue(errs, "%s: the fault was never reached (%d requests all succeeded)" %
                            (spec, len(ledger.ops)))
            for o in errs:
                self.assertTrue(o.error.startswith("IOERR write failed: ") or
                                o.error.startswith("IOERR write refused: "), "%s: %r" % (spec, o.error))
                self.assertIn(strerr, o.error, spec)
            first = min(errs, key=lambda o: o.id)
            self.assertTrue(any(o.error.startswith("IOERR write failed: %s" % strerr) for o in errs),
                            "%s: no reply says the write failed: %r" % (spec, [o.error for o in errs][:4]))
            # Every later write is refused, with the reason.
            r = srv.client()
            with self.assertRaises(redis.ResponseError) as cm:
                r.set(b"after-failure", b"x")
            self.assertTrue(str(cm.exception).startswith("IOERR write refused: "), str(cm.exception))
            inf = info(srv)
            self.assertEqual(inf.get("failstop"), "1", spec)
            reason = inf.get("failstop_reason", "")
            self.assertIn(strerr, reason, spec)
            # With 4 KiB segments the Nth write or sync may be that of a new
            # segment's header (which one depends on how requests grouped).
            whats = [what] + (["creating segment"] if "--segment-size" in extra else [])
            self.assertTrue(any(w + " on " in reason for w in whats), "%s: reason %r" % (spec, reason))
            self.assertIn(reason, str(cm.exception))
            if err == errno_mod.ENOSPC:
                self.assertIn("disk full", reason)
            # Reads go on and return exactly what was acknowledged.
            exp = expected_values(ledger)
            keys = sorted(exp)
            got = dict(zip(keys, r.mget(keys)))
            bad = [k for k in keys if got[k] != exp[k]]
            self.assertEqual(bad, [], "%s: reads in fail-stop differ from the acknowledged values" % spec)
            self.assertEqual(r.dbsize(), sum(v is not None for v in exp.values()))
            r.close()
            rc = srv.stop()
            self.assertEqual(rc, 0, "%s: kvd in fail-stop exited %r on SIGTERM" % (spec, rc))
        finally:
            srv.cleanup()
        sanitizer_check(self, srv)
        ev = parse_trace(trace)
        inj = [e for e in ev if e.inj]
        self.assertTrue(inj, "%s: the shim logged no injected failure" % spec)
        IOErrors.injected += 1

        # Restart without the fault: every acknowledged write is there.
        srv2 = KvdServer(extra, datadir=datadir, workdir=os.path.join(base, "run2"))
        os.makedirs(srv2.workdir)
        try:
            srv2.start()
            store = read_store(srv2)
            v = check_recovered(store, ledger.histories(), sorted(ledger.ops, key=lambda o: o.id), float("inf"),
                                require_acked=True)
            self.assertEqual(v.problems, [], "%s: after restart:\n%s" % (spec, "\n".join(v.problems[:5])))
            # Writes that were refused (fail-stop) never reached the log.
            # (SET/MSET values only: they are unique, counter values are not.)
            refused = [o for o in ledger.ops if o.error and o.error.startswith("IOERR write refused")]
            for o in refused:
                for k, val in o.effects:
                    if val is not None and b":k" in k:
                        self.assertNotEqual(store.get(k), val, "%s: a refused write is in the store: %r" % (spec, o))
            inf2 = info(srv2)
            self.assertEqual(inf2.get("failstop"), "0")
            r = srv2.client()
            self.assertTrue(r.set(b"after-restart", b"ok"))
            self.assertEqual(r.incr(b"after-restart-n"), 1)
            self.assertEqual(r.get(b"after-restart"), b"ok")
            r.close()
            self.assertEqual(srv2.stop(), 0)
            sanitizer_check(self, srv2)
        finally:
            srv2.cleanup()
        fs = run_kvfsck(datadir)
        if fs is not None:
            self.assertEqual(fs[0], 0, "%s: kvfsck after restart:\n%s" % (spec, fs[1][-2000:]))
        nacked = sum(o.ack_pos is not None for o in ledger.ops)
        log("  %-22s %-20s %4d acknowledged, first error on request %d: %s; restart: %s torn bytes cut, "
            "all acknowledged writes present" % (spec, " ".join(extra) or "-", nacked, first.id, first.error[:60],
                                                 inf2.get("recovery_torn_bytes_cut")))

    def test_runtime_faults(self):
        """Fail the Nth write / fdatasync / directory fsync / create."""
        cases = runtime_faults()
        log("\nI/O errors at runtime (%d injection points):" % len(cases))
        for spec, extra, what in cases:
            with self.subTest(spec=spec):
                self.run_case(spec, extra, what)
        log("I/O error points injected and recovered: %d" % IOErrors.injected)

    def test_failed_preallocation(self):
        """With --preallocate yes the first group's write (write 2, after
        the segment header) is followed by the zero-fill ahead of the log
        (write 3). When that fails (ENOSPC after writing 512 KiB of zeros,
        and EIO), no request fails: kvd logs it, appends without
        preallocation, cuts the zeros it wrote at shutdown, and keeps
        every write."""
        log("\nA failing zero-fill (preallocation):")
        for spec in ("write:3:ENOSPC:524288", "write:3:EIO"):
            with self.subTest(spec=spec):
                base = tempfile.mkdtemp(prefix="kvd-faults-prealloc-")
                try:
                    self._failed_preallocation(spec, base)
                finally:
                    shutil.rmtree(base, ignore_errors=True)

    def _failed_preallocation(self, spec, base):
        datadir = os.path.join(base, "data")
        os.makedirs(datadir)
        trace = os.path.join(base, "trace")
        srv = TracedKvd(["--preallocate", "yes"], env_extra=shim_env(datadir, trace, fail=spec), datadir=datadir,
                        workdir=os.path.join(base, "run1"))
        os.makedirs(srv.workdir)
        ledger = Ledger()
        try:
            srv.start()
            run_workload(srv, trace, ledger, 2, 7, nops=60, stop_on_error=True, after_error=2)
            errs = [o for o in ledger.ops if o.error is not None]
            self.assertEqual(errs, [], "%s: a failed zero-fill failed requests" % spec)
            self.assertEqual(info(srv).get("failstop"), "0", spec)
            with open(os.path.join(datadir, "0000000001.seg"), "rb") as f:
                running = f.read()
            if spec.endswith(":524288"):  # zeros written before the failure, past what the load wrote
                self.assertEqual(running[-4096:], b"\0" * 4096, spec)
            self.assertEqual(srv.stop(), 0)
            self.assertIn("appending without it", srv.read_log(), spec)
        finally:
            srv.cleanup()
        sanitizer_check(self, srv)
        self.assertTrue([e for e in parse_trace(trace) if e.inj], "%s: the shim logged no injected failure" % spec)
        seg = os.path.join(datadir, "0000000001.seg")
        with open(seg, "rb") as f:
            data = f.read()
        # A clean shutdown cut the zeros and sealed the segment: it ends with
        # its trailer (type 5), which names its own offset (docs/format.md).
        t = data[-44:]
        self.assertEqual((t[12], struct.unpack_from("<Q", t, 32)[0]), (5, len(data) - 44),
                         "%s: the segment does not end with its trailer after a clean shutdown "
                         "(zeros left past the log?)" % spec)
        self.assertEqual(struct.unpack_from("<I", t, 4)[0], zlib.crc32(t[8:44]), spec)
        srv2 = KvdServer([], datadir=datadir, workdir=os.path.join(base, "run2"))
        os.makedirs(srv2.workdir)
        try:
            srv2.start()
            v = check_recovered(read_store(srv2), ledger.histories(), sorted(ledger.ops, key=lambda o: o.id),
                                float("inf"), require_acked=True)
            self.assertEqual(v.problems, [], "%s: after restart:\n%s" % (spec, "\n".join(v.problems[:5])))
            self.assertEqual(srv2.stop(), 0)
        finally:
            srv2.cleanup()
        log("  %-16s %d requests, none failed; zeros cut at shutdown; all present after restart" % (
            spec, len(ledger.ops)))

    def test_startup_faults(self):
        """A failure while kvd opens its directory: exit 1 with a message;
        the next start without the fault works."""
        log("\nI/O errors during start-up:")
        for spec in STARTUP_FAULTS:
            with self.subTest(spec=spec):
                base = tempfile.mkdtemp(prefix="kvd-faults-start-")
                try:
                    datadir = os.path.join(base, "data")
                    os.makedirs(datadir)
                    trace = os.path.join(base, "trace")
                    srv = TracedKvd((), env_extra=shim_env(datadir, trace, fail=spec), datadir=datadir,
                                    workdir=os.path.join(base, "run1"))
                    os.makedirs(srv.workdir)
                    try:
                        srv.start(wait=False)
                        rc = srv.wait_exit(20)
                    finally:
                        srv.cleanup()
                    text = srv.read_log() + srv.read_stderr()
                    self.assertEqual(rc, 1, "%s: kvd exited %r\n%s" % (spec, rc, text[-2000:]))
                    self.assertIn(os.strerror(fault_errno(spec)), text, spec)
                    sanitizer_check(self, srv)
                    line = [ln for ln in text.splitlines() if os.strerror(fault_errno(spec)) in ln][0]
                    srv2 = KvdServer((), datadir=datadir, workdir=os.path.join(base, "run2"))
                    os.makedirs(srv2.workdir)
                    try:
                        srv2.start()
                        r = srv2.client()
                        self.assertTrue(r.set(b"k", b"v"))
                        r.close()
                        self.assertEqual(srv2.stop(), 0)
                        sanitizer_check(self, srv2)
                    finally:
                        srv2.cleanup()
                    IOErrors.injected += 1
                    log("  %-18s exit 1: %s" % (spec, line.split(" ", 4)[-1][:150]))
                finally:
                    shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# Full disk, in a private mount namespace
# ---------------------------------------------------------------------------

FULLDISK_SKIP = 77


def _fulldisk_inner(work, scenario):
    """Runs inside `unshare -m --propagation private`: mounts a 2 MiB tmpfs
    on work/mnt, runs the scenario, unmounts. Prints one JSON line."""
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", mnt], capture_output=True,
                       text=True)
    if p.returncode != 0:
        print("SKIP: mount -t tmpfs is not permitted here: %s" % p.stderr.strip())
        return FULLDISK_SKIP
    servers = []
    try:
        res = _fulldisk_scenario(work, mnt, scenario, servers)
        print(json.dumps(res))
        return 0
    finally:
        for s in servers:
            s.cleanup()
        subprocess.run(["umount", mnt], capture_output=True)


def _fulldisk_scenario(work, mnt, scenario, servers):
    res = {"scenario": scenario}
    extra = ["--segment-size", "64kb"] if scenario == "small-segments" else []
    filler = os.path.join(mnt, "filler")
    with open(filler, "wb") as f:
        f.write(b"\xee" * (384 * 1024))
        os.fsync(f.fileno())
    datadir = os.path.join(mnt, "data")

    def server(tag):
        wd = os.path.join(work, tag)
        os.makedirs(wd, exist_ok=True)
        s = KvdServer(extra, datadir=datadir, workdir=wd)
        servers.append(s)
        return s

    def check_sanitizers(s):
        rep = s.sanitizer_reports()
        assert not rep, "sanitizer report from kvd: %s\n%s" % (rep, s.read_stderr()[-4000:])

    def check_acked(r, acked):
        keys = sorted(acked)
        for i in range(0, len(keys), 200):
            chunk = keys[i:i + 200]
            got = r.mget(chunk)
            bad = [k for k, g in zip(chunk, got) if g != acked[k]]
            assert not bad, "acknowledged keys lost or wrong: %r" % bad[:5]

    # 1. Fill the disk.
    s1 = server("run1")
    s1.start()
    r = s1.client()
    acked, first_err, n = {}, None, 0
    while first_err is None and n < 5000:
        n += 1
        try:
            if n % 10 == 0:
                m = {b"m%d.%d" % (n, j): (b"%d.%d:" % (n, j)) + b"M" * 1500 for j in range(3)}
                r.mset(m)
                acked.update(m)
            else:
                k, v = b"k%d" % n, (b"%d:" % n) + b"V" * 3000
                r.set(k, v)
                acked[k] = v
        except redis.ResponseError as e:
            first_err = str(e)
    assert first_err is not None, "the disk never filled (%d writes)" % n
    res["acked"] = len(acked)
    res["first_error"] = first_err
    assert first_err.startswith("IOERR write failed: No space left on device"), first_err
    try:
        r.set(b"more", b"x")
        raise AssertionError("a write was accepted in fail-stop")
    except redis.ResponseError as e:
        res["later_error"] = str(e)
        assert str(e).startswith("IOERR write refused: "), str(e)
        assert "No space left on device (disk full)" in str(e), str(e)
    inf = info(s1)
    assert inf.get("failstop") == "1", inf
    res["failstop_reason"] = inf.get("failstop_reason")
    assert "No space left on device (disk full)" in res["failstop_reason"], res["failstop_reason"]
    check_acked(r, acked)  # reads go on
    assert r.dbsize() == len(acked)
    r.close()
    st = os.statvfs(mnt)
    res["free_bytes_when_full"] = st.f_bavail * st.f_frsize
    rc = s1.stop()
    assert rc == 0, "kvd in fail-stop exited %r on SIGTERM" % rc
    check_sanitizers(s1)

    # 2. Restart while the disk is still full.
    s2 = server("run2")
    try:
        s2.start()
    except AssertionError:
        text = s2.read_log() + s2.read_stderr()
        line = [ln for ln in text.splitlines() if "No space left on device" in ln]
        assert line, "kvd refused to start on a full disk without saying why:\n" + text[-2000:]
        res["restart_full"] = "refused: " + line[0].split(" ", 4)[-1]
    else:
        r = s2.client()
        check_acked(r, acked)
        try:
            r.set(b"more2", b"x")
            res["restart_full"] = "started, every acknowledged key present, a write was accepted"
        except redis.ResponseError as e:
            res["restart_full"] = "started, every acknowledged key present, writes fail: %s" % str(e)[:80]
        r.close()
        assert s2.stop() == 0
    check_sanitizers(s2)

    # 3. Free space; restart: everything acknowledged is there, writes work.
    os.remove(filler)
    s3 = server("run3")
    s3.start()
    inf3 = info(s3)
    res["torn_bytes_cut"] = int(inf3.get("recovery_torn_bytes_cut", "0"))
    r = s3.client()
    check_acked(r, acked)
    assert r.dbsize() == len(acked) + (1 if r.exists(b"more2") else 0)
    for i in range(20):
        assert r.set(b"after%d" % i, b"y" * 100)
    assert r.get(b"after19") == b"y" * 100
    r.close()
    assert s3.stop() == 0
    check_sanitizers(s3)
    fs = run_kvfsck(datadir)
    if fs is not None:
        assert fs[0] == 0, "kvfsck after recovery exited %d:\n%s" % (fs[0], fs[1][-2000:])
        res["kvfsck"] = 0
    res["files"] = sorted(os.listdir(datadir))
    return res


class FullDisk(unittest.TestCase):
    def test_full_disk(self):
        if os.geteuid() != 0:
            self.skipTest("full-disk test skipped: it needs root to mount a small tmpfs in a private mount "
                          "namespace (euid %d)" % os.geteuid())
        if not shutil.which("unshare") or not shutil.which("mount"):
            self.skipTest("full-disk test skipped: unshare or mount (util-linux) not installed")
        probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            self.skipTest("full-disk test skipped: unshare -m is not permitted here: %s" % probe.stderr.strip())
        log("\nfull disk (2 MiB tmpfs with a 384 KiB filler, in a private mount namespace):")
        for scenario in ("default", "small-segments"):
            with self.subTest(scenario=scenario):
                work = tempfile.mkdtemp(prefix="kvd-fulldisk-")
                try:
                    p = subprocess.Popen(["unshare", "-m", "--propagation", "private", sys.executable,
                                          os.path.abspath(__file__), "--fulldisk-inner", work, scenario],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    try:
                        out, err = p.communicate(timeout=240)
                    except subprocess.TimeoutExpired:
                        p.send_signal(signal.SIGTERM)  # the inner process stops its kvd and unmounts
                        try:
                            out, err = p.communicate(timeout=30)
                        except subprocess.TimeoutExpired:
                            p.kill()
                            out, err = p.communicate()
                        self.fail("full-disk scenario %s timed out\n%s\n%s" % (scenario, out, err[-3000:]))
                    if p.returncode == FULLDISK_SKIP:
                        self.skipTest("full-disk test skipped: " + out.strip())
                    self.assertEqual(p.returncode, 0, "full-disk scenario %s failed:\n%s\n%s" %
                                     (scenario, out[-3000:], err[-5000:]))
                    res = json.loads(out.strip().splitlines()[-1])
                    log("  %s: %d writes acknowledged before the disk filled; first error %r; then %r; "
                        "INFO failstop_reason %r; restart on the full disk: %s; after freeing space: started, "
                        "%d torn bytes cut, all %d acknowledged keys present, writes work, kvfsck %s; files %s" % (
                            scenario, res["acked"], res["first_error"][:70], res["later_error"][:50],
                            res["failstop_reason"], res["restart_full"], res["torn_bytes_cut"], res["acked"],
                            "exit 0" if res.get("kvfsck") == 0 else "not built", res["files"]))
                finally:
                    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--fulldisk-inner":
        sys.exit(_fulldisk_inner(sys.argv[2], sys.argv[3]))
    unittest.main()
