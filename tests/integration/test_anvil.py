"""anvil, the per-client limit service, run standalone the way master runs
it: the listening UNIX socket private/anvil on fd 3, `-n anvil -t unix -s 1`.
Two client connections play two smtpd processes and speak the record
protocol (common/attr.h): counts, rates, release of a vanished smtpd's
connections, the fixed rate window (anvil_rate_time_unit = 2s), malformed
requests refused and their peer dropped without harm to the daemon or other
peers, and the statistics line."""
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest

BIN = os.environ.get("POSTINO_BIN") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "bin")
ANVIL = os.path.join(BIN, "anvil")
IDENT = "smtp:192.0.2.1"


def encode(pairs):
    out = b""
    for name, value in pairs:
        v = "".join("%%%02X" % ord(ch) if ord(ch) < 0x20 or ch in "%\x7f" else ch
                    for ch in str(value))
        out += ("%s=%s\n" % (name, v)).encode()
    return out + b"\n"


class Peer:
    """One connection to anvil (as one smtpd process keeps)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.inbuf = b""

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_record(self):
        """Next reply record as a dict, or None at EOF."""
        while b"\n\n" not in self.inbuf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.inbuf += chunk
        rec, self.inbuf = self.inbuf.split(b"\n\n", 1)
        return dict(line.split("=", 1) for line in rec.decode().split("\n"))

    def req(self, request, ident=IDENT, **extra):
        pairs = [("proto", "1"), ("request", request)]
        if ident is not None:
            pairs.append(("ident", ident))
        pairs += list(extra.items())
        self.send_raw(encode(pairs))
        return self.read_record()

    def close(self):
        self.sock.close()


class Anvil:
    def __init__(self, tmp, time_unit="2s"):
        self.tmp = tmp
        self.spool = os.path.join(tmp, "spool")
        self.conf = os.path.join(tmp, "conf")
        self.maillog = os.path.join(tmp, "maillog")
        os.makedirs(os.path.join(self.spool, "private"))
        os.makedirs(self.conf)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write("queue_directory = %s\nmaillog_file = %s\nanvil_rate_time_unit = %s\n"
                    % (self.spool, self.maillog, time_unit))
        self.path = os.path.join(self.spool, "private", "anvil")
        self.proc = None

    def start(self):
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(self.path)
        lsock.listen(64)
        fd = lsock.fileno()

        def to_fd3():
            if fd == 3:
                os.set_inheritable(3, True)
            else:
                os.dup2(fd, 3)  # an inheritable copy, as master passes it

        self.proc = subprocess.Popen(
            [ANVIL, "-c", self.conf, "-n", "anvil", "-t", "unix", "-s", "1"],
            preexec_fn=to_fd3, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "stderr"), "w"))
        lsock.close()  # the daemon has its copy
        return self

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        try:
            with open(self.maillog) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode if self.proc else None


@pytest.fixture
def anvil(postino_bin):
    import shutil
    tmp = tempfile.mkdtemp(prefix="postino-anvil-", dir="/tmp")
    try:
        a = Anvil(tmp).start()
        yield a
        a.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def eventually(pred, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def test_counts_and_release_on_close(anvil):
    one, two = Peer(anvil.path), Peer(anvil.path)
    assert one.req("connect") == {"status": "ok", "count": "1", "rate": "1"}
    assert one.req("connect") == {"status": "ok", "count": "2", "rate": "2"}
    assert two.req("connect") == {"status": "ok", "count": "3", "rate": "3"}
    # another client of the same service, and the same client on another
    # service, count apart
    assert two.req("connect", ident="smtp:192.0.2.9")["count"] == "1"
    assert two.req("connect", ident="submission:192.0.2.1")["count"] == "1"
    r = two.req("lookup")
    assert r["status"] == "ok" and r["count"] == "3" and r["rate"] == "3"
    # the first "smtpd" dies: its two connections go with it
    one.close()
    assert eventually(lambda: two.req("lookup")["count"] == "1")
    assert two.req("lookup")["rate"] == "3"  # rates are history, not released
    assert two.req("disconnect") == {"status": "ok", "count": "0"}
    # a second disconnect does not go below zero
    assert two.req("disconnect") == {"status": "ok", "count": "0"}
    # a disconnect for a connection another smtpd reported changes nothing
    three = Peer(anvil.path)
    assert three.req("connect")["count"] == "1"
    assert two.req("disconnect")["count"] == "1"
    assert three.req("disconnect")["count"] == "0"
    two.close()
    three.close()


def test_rates_and_window(anvil):
    p = Peer(anvil.path)
    for n in (1, 2, 3):
        assert p.req("message") == {"status": "ok", "rate": str(n)}
    assert p.req("recipient") == {"status": "ok", "rate": "1"}
    assert p.req("recipient") == {"status": "ok", "rate": "2"}
    assert p.req("auth_fail") == {"status": "ok", "rate": "1"}
    assert p.req("auth") == {"status": "ok", "rate": "1", "auth_fail_rate": "1"}
    r = p.req("lookup")
    assert r == {"status": "ok", "count": "0", "rate": "0", "message_rate": "3",
                 "recipient_rate": "2", "auth_rate": "1", "auth_fail_rate": "1"}
    # pipelined requests are answered in order
    p.send_raw(encode([("proto", "1"), ("request", "message"), ("ident", IDENT)]) * 5)
    assert [p.read_record()["rate"] for _ in range(5)] == ["4", "5", "6", "7", "8"]
    # anvil_rate_time_unit = 2s: a new window starts from zero
    time.sleep(2.2)
    assert p.req("lookup")["message_rate"] == "0"
    assert p.req("message") == {"status": "ok", "rate": "1"}
    assert p.req("connect") == {"status": "ok", "count": "1", "rate": "1"}
    p.close()


@pytest.mark.parametrize("pairs,reason", [
    ([("request", "connect"), ("ident", IDENT)], "proto"),
    ([("proto", "2"), ("request", "connect"), ("ident", IDENT)], "proto"),
    ([("proto", "1"), ("ident", IDENT)], "request"),
    ([("proto", "1"), ("request", "connect")], "ident"),
    ([("proto", "1"), ("request", "connect"), ("ident", "")], "ident"),
    ([("proto", "1"), ("request", "message"), ("ident", "no-colon")], "ident"),
    ([("proto", "1"), ("request", "message"), ("ident", "smtp:" + "x" * 400)], "ident"),
])
def test_malformed_request_answered_then_closed(anvil, pairs, reason):
    """A record from a peer daemon that lacks what every request needs is
    malformed (common/util/conn.h): answered status=fail, nothing of it
    counted, that peer dropped; the daemon and other peers go on."""
    keeper = Peer(anvil.path)
    assert keeper.req("connect")["count"] == "1"
    p = Peer(anvil.path)
    p.send_raw(encode(pairs))
    r = p.read_record()
    assert r["status"] == "fail" and reason in r["reason"]
    assert p.read_record() is None
    p.close()
    assert anvil.alive()
    assert keeper.req("lookup") == {"status": "ok", "count": "1", "rate": "1", "message_rate": "0",
                                    "recipient_rate": "0", "auth_rate": "0", "auth_fail_rate": "0"}
    keeper.close()
    assert eventually(lambda: "malformed record from client connection" in anvil.log())
    assert "dropping the connection" in anvil.log()


def test_unknown_request_refused_connection_kept(anvil):
    p = Peer(anvil.path)
    p.send_raw(encode([("proto", "1"), ("request", "explode"), ("ident", IDENT)]))
    r = p.read_record()
    assert r["status"] == "fail" and "unknown" in r["reason"]
    # same connection still served, and nothing was counted
    assert p.req("lookup") == {"status": "ok", "count": "0", "rate": "0", "message_rate": "0",
                               "recipient_rate": "0", "auth_rate": "0", "auth_fail_rate": "0"}
    p.close()
    assert anvil.alive()
    assert "refused request from client connection" in anvil.log()


@pytest.mark.parametrize("garbage", [
    b"BAD NAME=1\n\n",
    b"no equals sign\n\n",
    b"proto=1\nrequest=connect\nident=smtp:%ZZ\n\n",
    b"\n",
    b"x" * 300000,
], ids=["bad-name", "no-equals", "bad-escape", "empty-record", "endless-line"])
def test_garbage_answered_then_closed(anvil, garbage):
    keeper = Peer(anvil.path)
    assert keeper.req("connect")["count"] == "1"
    p = Peer(anvil.path)
    try:
        p.send_raw(garbage)
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = p.read_record()
    assert r is not None and r["status"] == "fail"
    assert p.read_record() is None  # the stream cannot be trusted: closed
    p.close()
    # the daemon lives on, and other connections' counts are intact
    assert anvil.alive()
    assert keeper.req("lookup")["count"] == "1"
    assert Peer(anvil.path).req("connect")["count"] == "2"
    keeper.close()


def test_many_clients_then_statistics_on_stop(anvil):
    peers = [Peer(anvil.path) for _ in range(3)]
    for k, p in enumerate(peers):
        for _ in range(k + 1):
            p.req("connect", ident="smtp:198.51.100.7")
    assert peers[0].req("lookup", ident="smtp:198.51.100.7")["count"] == "6"
    for n in range(1, 201):
        assert peers[1].req("recipient", ident="smtp:10.0.%d.%d" % (n // 256, n % 256))["rate"] == "1"
    assert anvil.stop() == 0
    log = anvil.log()
    assert "statistics: max connection count 6 for (smtp:198.51.100.7) at " in log
    assert "statistics: max connection rate 6/2s for (smtp:198.51.100.7) at " in log
    assert "statistics: max cache size 201 at " in log
    assert "postino/anvil[" in log
    for p in peers:
        p.close()


def test_idle_entries_expire(anvil):
    p = Peer(anvil.path)
    p.req("connect", ident="smtp:203.0.113.1")
    p.req("message", ident="smtp:203.0.113.2")
    assert p.req("status", ident=None) == {"status": "ok", "size": "2"}
    # the expiry timer runs every window (2s): the idle client goes within
    # two windows, the connected one stays
    assert eventually(lambda: p.req("status", ident=None)["size"] == "1", timeout=6)
    assert p.req("lookup", ident="smtp:203.0.113.1")["count"] == "1"
    p.req("disconnect", ident="smtp:203.0.113.1")
    assert eventually(lambda: p.req("status", ident=None)["size"] == "0", timeout=6)
    p.close()
    assert anvil.alive()


def test_under_master(postino_bin):
    """The row the lead adds to master.cf: master creates private/anvil,
    starts anvil as mail_owner and restarts it when it dies."""
    import postino_harness as h
    pi = h.Postino(master_extra=["anvil unix - - n - 1 anvil"],
                   main={"anvil_rate_time_unit": "60s"})
    try:
        pi.start()
        path = os.path.join(pi.spool, "private", "anvil")
        p = eventually(lambda: os.path.exists(path) and Peer(path))
        assert p.req("connect") == {"status": "ok", "count": "1", "rate": "1"}
        assert len(pi.kill("anvil")) == 1
        assert p.read_record() is None  # our connection went with it

        def fresh():
            try:
                return Peer(path).req("lookup")
            except OSError:
                return None
        r = eventually(fresh, timeout=15)
        assert r is not None and r["status"] == "ok" and r["count"] == "0"
        p.close()
    finally:
        pi.stop()
        pi.kill("anvil")  # not in the harness's DAEMONS list
        import shutil
        shutil.rmtree(pi.dir, ignore_errors=True)
