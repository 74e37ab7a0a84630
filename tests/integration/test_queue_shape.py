"""The queue's shape and the CLI's machine-readable output (issue #11):
`postino queue summary` (sites or -d domains x qshape's age buckets,
biggest first, a state filter, --json), `postino queue list --json`,
`postino config --json`, `postino top` as a one-shot table when stdout is
not a terminal, and the count line of long queue operations.

Mail is kept deferred by the sink answering 451 with a one-hour back-off.
Ages older than the test run are made by rewriting the arrival record of
stopped queue files (same length, so the file's offsets hold) and letting
qmgr rebuild its index from the files."""
import json
import os
import re
import time

import postino_harness as h

SENDER = "s@sender.test"
LABELS = ["5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"]


def _deferring(postino_factory, sink, **main):
    conf = {"relayhost": "[127.0.0.1]:%d" % sink.port,
            "minimal_backoff_time": "1h", "maximal_backoff_time": "1h"}
    conf.update(main)
    p = postino_factory(main=conf)
    sink.on_rcpt(lambda ip, rcpt: True, forever="451 4.3.0 deferred by the test sink")
    return p


def _queue(p, rcpts):
    qid = p.send(SENDER, rcpts)
    for r in rcpts:
        p.wait_log(r"%s: to=<%s>, .*status=deferred" % (qid, re.escape(r)))
    return qid


def _qfile(p, qid):
    for root, _, files in os.walk(os.path.join(p.spool, "queue")):
        if qid in files:
            return os.path.join(root, qid)
    raise AssertionError("no queue file for %s" % qid)


def _age(p, qid, minutes):
    """Make qid minutes old: its arrival record, rewritten in place."""
    path = _qfile(p, qid)
    with open(path, "r+b") as f:
        data = f.read()
        m = re.search(rb"\narrival=(\d+)\.(\d{6})\n", data)
        assert m, "no arrival record in %s" % path
        new = b"%d" % (int(m.group(1)) - minutes * 60)
        assert len(new) == len(m.group(1))
        f.seek(m.start(1))
        f.write(new)


def _rebuild(p):
    """Restart with the index gone: qmgr indexes the files again."""
    p.stop()
    os.unlink(os.path.join(p.spool, "index", "queue.db"))
    p.start()
    p.wait_log(r"queue index created")
    _ready(p)


def _ready(p):
    """qmgr answers on public/control (start returns once smtpd greets)."""
    h.wait_until(lambda: p.cli("queue", "stats").returncode == 0, timeout=30,
                 what="qmgr answering on public/control")


def _summary(p, *args):
    r = p.cli("queue", "summary", "--json", *args, check=True)
    return json.loads(r.stdout)


def _row(s, name):
    rows = {r["name"]: r for r in s["rows"]}
    assert name in rows, "no row %s in %s" % (name, s)
    return rows[name]


def _buckets(**counts):
    """_buckets(b5=2, b10=1) -> the ten counts."""
    return [counts.get("b" + lab.replace("+", "plus"), 0) for lab in LABELS]


def test_summary_by_site_and_domain(postino_factory, sink):
    p = _deferring(postino_factory, sink)
    a = [_queue(p, ["x%d@a.test" % i]) for i in range(3)]
    b = [_queue(p, ["y%d@b.test" % i]) for i in range(2)]
    c = _queue(p, ["z1@c.test", "z2@c.test"])        # two recipients: one message
    ac = _queue(p, ["w@a.test", "w@c.test"])          # two domains: once in each
    _age(p, a[2], 7)
    _age(p, b[0], 30)
    _age(p, b[1], 2000)
    _rebuild(p)

    d = _summary(p, "-d")
    assert d["by"] == "domain"
    assert d["buckets"] == LABELS
    assert [r["name"] for r in d["rows"]] == ["a.test", "b.test", "c.test"], d
    assert _row(d, "a.test")["total"] == 4
    assert _row(d, "a.test")["buckets"] == _buckets(b5=3, b10=1)
    assert _row(d, "b.test")["buckets"] == _buckets(b40=1, b1280plus=1)
    assert _row(d, "c.test")["buckets"] == _buckets(b5=2)
    assert d["total"]["total"] == 7, "each message once in TOTAL"
    assert d["total"]["buckets"] == _buckets(b5=4, b10=1, b40=1, b1280plus=1)

    s = _summary(p)
    assert s["by"] == "site"
    site = "[127.0.0.1]:%d" % sink.port
    assert [r["name"] for r in s["rows"]] == [site], "the relayhost is the one site: %s" % s
    assert _row(s, site)["total"] == 7, "a message of two domains of one site counts once"
    assert _row(s, site)["buckets"] == _buckets(b5=4, b10=1, b40=1, b1280plus=1)

    # the table: header, TOTAL, then the rows, biggest first
    r = p.cli("queue", "summary", "-d", check=True)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["T"] + LABELS, r.stdout
    assert lines[1].split() == ["TOTAL", "7", "4", "1", "0", "1", "0", "0", "0", "0", "0", "1"]
    assert lines[2].split() == ["a.test", "4", "3", "1"] + ["0"] * 8
    assert [ln.split()[0] for ln in lines[2:]] == ["a.test", "b.test", "c.test"]
    assert len({len(ln) for ln in lines}) == 1, "columns line up:\n" + r.stdout

    # the state filter, as qshape's queue names
    p.cli("queue", "hold", b[1], check=True)
    hold = _summary(p, "-d", "hold")
    assert hold["states"] == ["hold"]
    assert hold["total"]["total"] == 1
    assert [(x["name"], x["buckets"]) for x in hold["rows"]] == [("b.test", _buckets(b1280plus=1))]
    dfr = _summary(p, "-d", "deferred")
    assert dfr["total"]["total"] == 6
    assert _row(dfr, "b.test")["buckets"] == _buckets(b40=1)
    both = _summary(p, "deferred", "hold")
    assert both["total"]["total"] == 7
    bad = p.cli("queue", "summary", "parked")
    assert bad.returncode != 0 and "state must be" in bad.stderr


def test_summary_of_an_empty_queue(postino):
    _ready(postino)
    s = _summary(postino)
    assert s["rows"] == [] and s["total"]["total"] == 0
    r = postino.cli("queue", "summary", check=True)
    assert r.stdout.splitlines()[1].split() == ["TOTAL"] + ["0"] * 11


def test_queue_list_json(postino_factory, sink):
    p = _deferring(postino_factory, sink)
    one = _queue(p, ["j1@a.test"])
    two = _queue(p, ["j2@b.test", "j3@b.test"])
    _age(p, two, 90)
    _rebuild(p)
    p.cli("queue", "hold", one, check=True)
    r = p.cli("queue", "list", "--json", check=True)
    out = json.loads(r.stdout)
    assert out["count"] == 2
    msgs = {m["queue_id"]: m for m in out["messages"]}
    assert set(msgs) == {one, two}
    assert msgs[one]["state"] == "hold"
    assert msgs[two]["state"] == "deferred"
    assert msgs[two]["sender"] == SENDER
    assert sorted(msgs[two]["recipients"]) == ["j2@b.test", "j3@b.test"]
    assert msgs[one]["recipients"] == ["j1@a.test"]
    assert "451" in msgs[two]["reason"]
    age = time.time() - msgs[two]["arrival"]
    assert 89 * 60 < age < 120 * 60, age
    assert out["bytes"] == msgs[one]["size"] + msgs[two]["size"] and msgs[one]["size"] > 0
    # selections work as without --json
    r = p.cli("queue", "list", "--json", "-d", "b.test", check=True)
    assert [m["queue_id"] for m in json.loads(r.stdout)["messages"]] == [two]
    p.cli("queue", "delete", "ALL", check=True)
    r = p.cli("queue", "list", "--json", check=True)
    assert json.loads(r.stdout) == {"messages": [], "count": 0, "bytes": 0}


def test_config_json(postino):
    _ready(postino)
    r = postino.cli("config", "--json", check=True)
    conf = json.loads(r.stdout)
    assert conf["myhostname"] == "postino.test"
    assert conf["queue_directory"] == postino.spool
    assert conf["minimal_backoff_time"] == "1s"
    plain = postino.cli("config", check=True).stdout.splitlines()
    assert len(conf) == len(plain), "every parameter, as without --json"
    r = postino.cli("config", "--json", "-n", check=True)
    set_only = json.loads(r.stdout)
    assert "myhostname" in set_only and "message_size_limit" not in set_only
    r = postino.cli("config", "--json", "myhostname", "mydestination", check=True)
    assert json.loads(r.stdout) == {"myhostname": "postino.test",
                                    "mydestination": "postino.test, localhost"}
    r = postino.cli("config", "--json", "no_such_parameter")
    assert r.returncode != 0 and "unknown parameter" in r.stderr


def _run_on_tty(p, *args, timeout=120):
    """The CLI with stderr on a terminal (a pty): (rc, stdout, terminal bytes)."""
    import pty
    import subprocess
    master, slave = pty.openpty()
    proc = subprocess.Popen([os.path.join(h.BIN, "postino"), "-c", p.conf] + list(args),
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:       # EIO: the other end is closed
            break
        if not chunk:
            break
        seen += chunk
    out = proc.stdout.read().decode()
    rc = proc.wait(timeout=timeout)
    os.close(master)
    return rc, out, seen


def test_long_changes_show_progress_and_a_count(postino_factory, sink):
    n = 2000
    # an unreachable relay: every message is deferred without a delivery
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % h.free_port(),
                              "minimal_backoff_time": "1h", "maximal_backoff_time": "1h"})
    import subprocess
    subprocess.run(["smtp-source", "-s", "4", "-m", str(n), "-f", SENDER, "-t", "p@a.test",
                    "127.0.0.1:%d" % p.port], check=True, timeout=300)
    _ready(p)

    def stats():
        r = p.cli("queue", "stats", check=True)
        return dict(ln.split() for ln in r.stdout.splitlines())
    h.wait_until(lambda: stats()["total"] == str(n), timeout=120, what="%d messages queued" % n)

    # qmgr answers a listing in pieces of 1,000 index records: none lost or repeated
    for sel in ((), ("-d", "a.test"), ("-s", SENDER)):
        listed = json.loads(p.cli("queue", "list", "--json", *sel, check=True).stdout)
        ids = [m["queue_id"] for m in listed["messages"]]
        assert listed["count"] == n and len(set(ids)) == n, sel
        assert ids == sorted(ids), "in queue id order"
    assert json.loads(p.cli("queue", "list", "--json", "-d", "b.test",
                            check=True).stdout)["count"] == 0

    rc, out, tty = _run_on_tty(p, "queue", "hold", "ALL")
    assert rc == 0, tty
    assert out == "postino: held %d messages\n" % n
    assert re.search(rb"\rpostino: holding \d+ of %d messages" % n, tty), tty
    assert _summary(p, "hold")["total"]["total"] == n

    r = p.cli("queue", "delete", "ALL", check=True, timeout=120)
    assert r.stdout == "postino: deleted %d messages\n" % n
    assert r.stderr == "", "no progress when stderr is not a terminal"
    h.wait_until(lambda: not p.queue_files(), timeout=60, what="an empty spool")
    assert stats()["total"] == "0"


def test_top_once_when_not_a_terminal(postino_factory, sink):
    p = _deferring(postino_factory, sink)
    for i in range(3):
        _queue(p, ["t%d@a.test" % i])
    _queue(p, ["u@b.test"])
    site = "[127.0.0.1]:%d" % sink.port
    r = p.cli("top", check=True)
    lines = r.stdout.splitlines()
    assert "\033" not in r.stdout, "no escapes when stdout is not a terminal"
    assert re.search(r"queue: 0 incoming, 0 active, 4 deferred, 0 hold, 4 total;", r.stdout), r.stdout
    assert lines[3].split()[:6] == ["SITE", "STATE", "CONNS", "MSG/MIN", "JOBS", "QUEUED"]
    row = [ln for ln in lines if ln.startswith(site)]
    assert len(row) == 1, r.stdout
    f = row[0].split()
    assert f[1] == "normal" and f[5] == "4", r.stdout
    assert "451 4.3.0 deferred by the test sink" in row[0], r.stdout
    # the same reason in site list --json
    sites = {s["name"]: s for s in json.loads(p.cli("site", "list", "--json", check=True).stdout)}
    assert "451 4.3.0 deferred by the test sink" in sites[site]["last_defer"]
    assert abs(sites[site]["last_defer_at"] - time.time()) < 600


def _frames(data):
    """The screens top drew: the text after each clear-screen escape."""
    return data.split(b"\033[H\033[2J")[1:]


def test_top_live_on_a_terminal_redraws_and_quits_on_q(postino_factory, sink):
    """On a terminal top redraws each second in the alternate screen, with
    the keyboard in raw mode, and q leaves it: the screen and the terminal
    modes are given back."""
    import fcntl
    import pty
    import select
    import struct
    import subprocess
    import termios
    p = _deferring(postino_factory, sink)
    for i in range(2):
        _queue(p, ["t%d@a.test" % i])
    site = "[127.0.0.1]:%d" % sink.port
    row = re.compile(rb"^%s +normal +\S+ +\d+ +\d+ +2  .*451 4\.3\.0 deferred by the test sink"
                     % re.escape(site.encode()), re.M)
    stamp = re.compile(rb"^postino top - (\d\d:\d\d:\d\d)  \(q to quit\)\r?$", re.M)

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 160, 0, 0))
    cooked = termios.tcgetattr(slave)
    proc = subprocess.Popen([os.path.join(h.BIN, "postino"), "-c", p.conf, "top"],
                            stdin=slave, stdout=slave, stderr=slave)
    seen = b""

    def read_some(wait):
        nonlocal seen
        if select.select([master], [], [], wait)[0]:
            seen += os.read(master, 65536)

    try:
        stamps = set()
        deadline = time.monotonic() + 60
        while len(stamps) < 2 and time.monotonic() < deadline and proc.poll() is None:
            read_some(0.5)
            # a frame is complete once the next one has begun
            for f in _frames(seen)[:-1]:
                m = stamp.search(f)
                assert m and row.search(f), f
                assert max(len(ln) for ln in f.split(b"\r\n")) <= 160, "cut to the width"
                stamps.add(m.group(1))
        assert len(stamps) >= 2, "two redraws a second apart, got %r" % seen[-2000:]
        assert seen.startswith(b"\033[?1049h"), "the alternate screen first"
        assert termios.tcgetattr(slave)[3] & termios.ECHO == 0, "raw keys while running"
        os.write(master, b"q")
        rc = proc.wait(timeout=30)
        while select.select([master], [], [], 0.2)[0]:
            seen += os.read(master, 65536)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        mode = termios.tcgetattr(slave)
        os.close(slave)
        os.close(master)
    assert rc == 0, seen[-2000:]
    assert seen.endswith(b"\033[?25h\033[?1049l"), "the screen given back: %r" % seen[-200:]
    assert mode[3] & (termios.ECHO | termios.ICANON) == cooked[3] & (termios.ECHO | termios.ICANON)
