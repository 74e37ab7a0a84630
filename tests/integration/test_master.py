"""master and the life cycle: reload (SIGHUP) with a new listener, a broken
main.cf at reload, the single-instance lock, status exit codes, start-fg,
crash-loop back-off, privilege separation checked from /proc (tests run as
root), smtpd chrooted into the spool, and config errors at start-up."""
import os
import re
import signal
import smtplib
import stat
import subprocess
import time
import pwd

import pytest

import postino_harness as h

SENDER = "s@sender.test"
DAEMON_CHILDREN = ("smtpd", "qmgr", "delivery", "bounce")


def _relay(postino_factory, sink, start=True, **kw):
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port}, start=start, **kw)
    if start:
        # "postino start" returns once master has forked its children; a
        # child may not have exec'd its program or read main.cf yet (slow
        # under ASan). A daemon that has dropped to the mail user is past
        # its configuration: only then may a test break main.cf.
        h.wait_until(lambda: _all_started(p), timeout=30, what="every daemon started")
    return p


def _all_started(p):
    kids = p.child_pids()
    if not set(kids.values()) >= set(DAEMON_CHILDREN):
        return False
    owner = pwd.getpwnam("postino").pw_uid
    try:
        return all(h.proc_ids(pid)[0][1] == owner for pid in kids)
    except OSError:
        return False


def _send_via(p, port, rcpt):
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("client.test")
    try:
        return p.send(SENDER, rcpt, conn=s)
    finally:
        s.quit()


def _owner():
    pw = pwd.getpwnam(h.MAIL_OWNER)
    return pw.pw_uid, pw.pw_gid


# ------------------------------------------------------------------ reload

def test_reload_adds_listener_and_respawns(postino_factory, sink):
    p = _relay(postino_factory, sink)
    master = p.master_pid()
    assert master, p.pids()
    before = p.child_pids()
    assert set(before.values()) >= set(DAEMON_CHILDREN), before
    new_port = h.free_port()
    assert not h.smtp_port_accepts(new_port)
    p.master_extra.append("127.0.0.1:%d inet n - n - 1 smtpd" % new_port)
    p.write_config()
    r = p.cli("reload", check=True)
    h.wait_until(lambda: h.smtp_port_accepts(new_port), timeout=20, what="smtpd on the new port")
    # Every daemon was replaced by one that read the new configuration,
    # but anvil, which re-reads main.cf where it is to keep its counters.
    replaced = {pid for pid, name in before.items() if name != "anvil"}
    h.wait_until(lambda: not set(p.child_pids()) & replaced, timeout=30,
                 what="the old daemons gone after reload")
    anvil = [pid for pid, name in before.items() if name == "anvil"]
    assert anvil and p.child_pids().get(anvil[0]) == "anvil", "anvil restarted by a reload"

    h.wait_until(lambda: set(p.child_pids().values()) >= set(DAEMON_CHILDREN), timeout=20,
                 what="every daemon running again")
    assert p.master_pid() == master, "master itself must survive a reload"
    p.wait_log(r"reload -- version")
    q_new = _send_via(p, new_port, "via-new@example.test")
    q_old = _send_via(p, p.port, "via-old@example.test")
    sink.wait_to("via-new@example.test")
    sink.wait_to("via-old@example.test")
    p.wait_removed(q_new)
    p.wait_removed(q_old)


def test_reload_with_broken_main_cf_keeps_old_config(postino_factory, sink):
    p = _relay(postino_factory, sink)
    master = p.master_pid()
    before = p.child_pids()
    p.set(message_size_limit="banana")
    # The CLI checks main.cf first and says where it is wrong ...
    r = p.cli("reload")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "main.cf" in r.stderr and "message_size_limit" in r.stderr, r.stderr
    # ... and master, signalled directly, logs it and keeps the old config.
    os.kill(master, signal.SIGHUP)
    line = p.wait_log(r"reload: .*message_size_limit.*keeping the old configuration")[0]
    assert "main.cf" in line, line
    time.sleep(1)
    assert p.master_pid() == master
    # A reload replaces every daemon; a failed one must replace none.
    assert set(p.child_pids()) & set(before), "daemons replaced on a failed reload"
    assert not p.log_lines(r"reload -- version"), "master reloaded a broken main.cf"
    qid = p.send(SENDER, "still-works@example.test")
    sink.wait_to("still-works@example.test")
    p.wait_removed(qid)
    # Fixed again: a reload goes through.
    del p.main["message_size_limit"]
    p.write_config()
    p.cli("reload", check=True)
    p.wait_log(r"reload -- version")


# ------------------------------------------------- lock, status, start-fg

def test_second_start_refused(postino_factory, sink):
    p = _relay(postino_factory, sink)
    master = p.master_pid()
    r = p.cli("start")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "already running" in r.stderr, r.stderr
    # The lock itself (not only the CLI's check): master run by hand.
    r = subprocess.run([os.path.join(h.BIN, "master"), "-c", p.conf, "-d"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "already running" in r.stderr, r.stderr
    assert p.master_pid() == master
    assert p.cli("status").returncode == 0
    qid = p.send(SENDER, "one-instance@example.test")
    sink.wait_to("one-instance@example.test")
    p.wait_removed(qid)


def test_start_fg_status_and_sigterm(postino_factory, sink):
    p = _relay(postino_factory, sink, start=False)
    assert p.cli("status").returncode == 1
    out = open(os.path.join(p.dir, "start-fg.out"), "w")
    proc = subprocess.Popen([os.path.join(h.BIN, "postino"), "-c", p.conf, "start-fg"],
                            stdout=out, stderr=subprocess.STDOUT)
    p.started = True            # teardown stops it should the test fail
    try:
        p.wait_smtp(20)
        r = p.cli("status")
        assert r.returncode == 0, r.stdout
        assert proc.poll() is None, "start-fg must stay in the foreground"
        # The foreground process is master itself (the CLI execs it).
        assert p.master_pid() == proc.pid, (proc.pid, p.pids())
        qid = p.send(SENDER, "fg@example.test")
        sink.wait_to("fg@example.test")
        p.wait_removed(qid)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
    assert rc == 0, "start-fg exit status on SIGTERM: %r" % rc
    h.wait_until(lambda: not p.pids(), timeout=20, what="every daemon gone")
    assert p.cli("status").returncode == 1
    p.started = False


# ------------------------------------------------------- crash-loop back-off

def test_crash_loop_backs_off(postino_factory, sink):
    p = _relay(postino_factory, sink, start=False,
               master_extra=["crashy unix - - n - 1 no-such-daemon"])
    p.start()
    t0 = time.time()
    time.sleep(8)
    elapsed = time.time() - t0
    # master logs why the program failed ...
    assert p.log_lines(r"no-such-daemon"), p.log_tail()
    fails = p.log_lines(r"no-such-daemon pid \d+ exit status|no-such-daemon: No such file")
    backoffs = p.log_lines(r"no-such-daemon: back-off \d+ seconds")
    delays = [int(re.search(r"back-off (\d+) seconds", ln).group(1)) for ln in backoffs]
    # ... and restarts it spaced out: 1, 2, 4 ... seconds, not in a tight loop.
    assert len(delays) >= 2, "no back-off logged:\n" + p.log_tail(40)
    assert all(b == min(2 * a, 60) for a, b in zip(delays, delays[1:])), delays
    # The log's own clock: consecutive failures are at least the back-off apart.
    exits = p.log_lines(r"no-such-daemon pid \d+ exit status")
    stamps = [time.mktime(time.strptime("2000 " + ln[:15], "%Y %b %d %H:%M:%S")) for ln in exits]
    for i in range(1, min(len(stamps), len(delays) + 1)):
        assert stamps[i] - stamps[i - 1] >= delays[i - 1] - 1, (exits, delays)
    assert sum(delays[:-1]) <= elapsed + 1
    assert len(delays) <= 6, "restarted %d times in %.0fs: %s" % (len(delays), elapsed, delays)
    assert len(fails) <= 2 * 6, len(fails)
    # The other services are unaffected.
    assert p.cli("status").returncode == 0
    qid = p.send(SENDER, "despite-crashy@example.test")
    sink.wait_to("despite-crashy@example.test")
    p.wait_removed(qid)


# ------------------------------------------------------ privilege separation

@pytest.mark.skipif(os.geteuid() != 0, reason="privilege separation needs root")
def test_privilege_separation_from_proc(postino_factory, sink):
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "minimal_backoff_time": "1h", "maximal_backoff_time": "1h"})
    uid, gid = _owner()
    master = p.master_pid()
    assert master
    muids, _ = h.proc_ids(master)
    assert muids[:3] == [0, 0, 0], "master runs as root: %s" % muids
    # master spawns the daemons one after another: on a loaded machine the
    # last may not be there yet when smtpd already answers.
    h.wait_until(lambda: set(p.child_pids().values()) >= set(DAEMON_CHILDREN),
                 what="every daemon of %s running" % (DAEMON_CHILDREN,))
    children = p.child_pids()

    # A just-forked daemon is root until it has read its configuration:
    # give start-up a moment, then every one must have dropped for good.
    def all_dropped():
        return all(h.proc_ids(pid)[0] == [uid] * 4 for pid in children)
    try:
        h.wait_until(all_dropped, timeout=20, what="every daemon running as %s" % h.MAIL_OWNER)
    except TimeoutError:
        pass                            # the loop below says which one
    for pid, name in children.items():
        uids, gids = h.proc_ids(pid)
        assert uids == [uid] * 4, "%s[%d] Uid: %s, want %d" % (name, pid, uids, uid)
        assert gids == [gid] * 4, "%s[%d] Gid: %s, want %d" % (name, pid, gids, gid)
        with open("/proc/%d/status" % pid) as f:
            groups = [ln for ln in f if ln.startswith("Groups:")][0].split()[1:]
        assert all(int(g) == gid for g in groups), "%s keeps groups %s" % (name, groups)
    # private/: the mail owner's only.
    priv = os.path.join(p.spool, "private")
    st = os.stat(priv)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == uid, oct(st.st_mode)
    socks = os.listdir(priv)
    assert socks, "no private sockets"
    for name in socks:
        st = os.stat(os.path.join(priv, name))
        assert stat.S_ISSOCK(st.st_mode), name
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == uid, \
            "private/%s: mode %o uid %d" % (name, stat.S_IMODE(st.st_mode), st.st_uid)
    # public/control is qmgr's own, made once its index is open: on a loaded
    # machine that can come a moment after the private sockets.
    control = os.path.join(p.spool, "public", "control")
    h.wait_until(lambda: os.path.exists(control), timeout=20, what="qmgr's public/control")
    assert stat.S_ISSOCK(os.stat(control).st_mode)
    # A file being written: 0600 (not yet complete).
    s = p.smtp()
    try:
        s.mail(SENDER)
        s.rcpt("in-progress@example.test")
        code, _ = s.docmd("DATA")
        assert code == 354
        s.send(b"Subject: half\r\n\r\n" + b"x" * 70000 + b"\r\n")
        files = h.wait_until(p.queue_files, timeout=5, what="the queue file being written")
        for qid in files:
            st = os.stat(_qpath(p, qid))
            assert stat.S_IMODE(st.st_mode) == 0o600, "incomplete file mode %o" % st.st_mode
            assert st.st_uid == uid
    finally:
        s.close()
    # A complete (deferred) message: 0700, owned by the mail owner.
    sink.on_rcpt("deferred@example.test", forever="451 4.3.0 later")
    qid = p.send(SENDER, "deferred@example.test")
    p.wait_log(r"%s: to=<deferred@example.test>, .*status=deferred" % qid)
    st = os.stat(_qpath(p, qid))
    assert stat.S_IMODE(st.st_mode) == 0o700, "complete file mode %o" % stat.S_IMODE(st.st_mode)
    assert (st.st_uid, st.st_gid) == (uid, gid)


def _qpath(p, qid):
    for root, _, files in os.walk(os.path.join(p.spool, "queue")):
        if qid in files:
            return os.path.join(root, qid)
    raise AssertionError("no queue file %s" % qid)


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_smtpd_chroot(postino_factory, sink):
    p = _relay(postino_factory, sink, smtpd_chroot=True)
    spool = os.path.realpath(p.spool)
    smtpds = p.pids(("smtpd",)).get("smtpd", [])
    assert smtpds

    def roots():
        return [os.readlink("/proc/%d/root" % pid) for pid in smtpds]
    try:    # a just-forked smtpd chroots once it has read its configuration
        h.wait_until(lambda: set(roots()) == {spool}, timeout=5, what="smtpd chrooted")
    except TimeoutError:
        pass
    for pid in smtpds:
        assert os.readlink("/proc/%d/root" % pid) == spool, pid
    for pid, name in p.child_pids().items():
        if name != "smtpd":
            assert os.readlink("/proc/%d/root" % pid) == "/", "%s chrooted but not asked to" % name
    qid = p.send(SENDER, "chrooted@example.test")
    sink.wait_to("chrooted@example.test")
    p.wait_removed(qid)
    assert p.log_lines(r"postino/smtpd\[\d+\]: %s: client=" % qid), p.log_tail(30)


# ----------------------------------------------------------- config errors

def test_invalid_value_stops_start(postino_factory):
    p = postino_factory(start=False, main={"message_size_limit": "banana"})
    cf = os.path.join(p.conf, "main.cf")
    lineno = [i for i, ln in enumerate(open(cf), 1) if ln.startswith("message_size_limit")][0]
    r = p.cli("start")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert cf in r.stderr or "main.cf" in r.stderr, r.stderr
    assert re.search(r"line %d\b" % lineno, r.stderr), r.stderr
    assert "message_size_limit" in r.stderr, r.stderr
    time.sleep(0.5)
    assert not p.pids(), "nothing may run after a failed start"
    assert p.cli("status").returncode == 1


def test_unknown_parameter_only_warns(postino_factory, sink):
    p = postino_factory(start=False, main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                                           "bogus_parameter_xyz": "1"})
    r = p.cli("start")
    assert r.returncode == 0, r.stderr
    p.started = True
    p.wait_smtp()
    text = r.stderr + p.log()
    assert re.search(r'unknown parameter "?bogus_parameter_xyz', text), text[-2000:]
    qid = p.send(SENDER, "unknown-ok@example.test")
    sink.wait_to("unknown-ok@example.test")
    p.wait_removed(qid)
