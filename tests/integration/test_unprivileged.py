"""Started by an ordinary user, postino runs entirely as that user: no
privilege to drop, no mail_owner needed, ports above 1024. (Started by
root, only master stays root: test_master checks that side.)"""
import os
import pwd
import shutil
import subprocess

import postino_harness as h


def _chown_tree(path, uid, gid):
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for f in files:
            os.chown(os.path.join(root, f), uid, gid)


def test_runs_as_the_invoking_user(postino_factory, sink):
    nobody = pwd.getpwnam("nobody")
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "mail_owner": "no-such-user-needed"}, start=False)
    # The programs must be reachable by that user wherever the checkout is.
    bindir = os.path.join(p.dir, "bin")
    shutil.copytree(h.BIN, bindir)
    p.set(daemon_directory=bindir)
    _chown_tree(p.dir, nobody.pw_uid, nobody.pw_gid)
    as_nobody = ["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
                 "--clear-groups", os.path.join(bindir, "postino"), "-c", p.conf]
    r = subprocess.run(as_nobody + ["start"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    try:
        p.wait_smtp(20)
        qid = p.send("s@sender.test", "plain-user@example.test")
        sink.wait_to("plain-user@example.test")
        p.wait_removed(qid)
        # Every process of the instance, master included, is nobody's.
        procs = {}
        for pid in _instance_pids(p):
            try:
                procs[pid] = h.proc_ids(pid)[0]
            except OSError:
                continue
        assert len(procs) >= 5, procs
        for pid, uids in procs.items():
            assert uids == [nobody.pw_uid] * 4, (pid, uids)
        r = subprocess.run(as_nobody + ["queue", "list"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
    finally:
        subprocess.run(as_nobody + ["stop"], capture_output=True, text=True, timeout=60)
        for pid in _instance_pids(p):
            try:
                os.kill(pid, 9)
            except OSError:
                pass


def _instance_pids(p):
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if p.conf.encode() in f.read():
                        out.append(int(pid))
            except OSError:
                pass
    return out
