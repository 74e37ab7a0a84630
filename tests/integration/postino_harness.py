"""postino_harness - run the whole postino system for end-to-end tests.

Three real peers, all on loopback with random free ports and temp dirs:
  DnsServer  dnsmasq serving MX/A records (delivery's MX routing)
  Sink       aiosmtpd receivers on 127.0.0.X:PORT with scripted answers
  Postino    a config dir + spool, `postino start`, SMTP/CLI/log helpers
Nothing here mocks postino: the tests talk to the real daemons.
"""
import asyncio
import email
import email.policy
import os
import pwd
import re
import random
import shutil
import signal
import smtplib
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as _AioSMTP

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("POSTINO_BIN") or os.path.join(REPO, "bin")
DAEMONS = ("master", "smtpd", "qmgr", "delivery", "bounce", "anvil", "feedback",
           "virtual", "error", "discard", "local", "pipe", "events")
DAEMONS += ("metrics",)  # the metrics service (issue #11)
QID_RE = re.compile(r"\b[0-9A-Fa-f]{17}\b")
MAIL_OWNER = "postino"


# ---------------------------------------------------------------- utilities

def free_port(kind=socket.SOCK_STREAM, host="127.0.0.1"):
    """A port free on host (TCP or UDP); the kernel picks it."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_udp_tcp(host="127.0.0.1"):
    """A port free for both UDP and TCP on host (dnsmasq binds both: a UDP
    port the kernel picked can be an outgoing TCP connection's local port
    after a test that opened thousands)."""
    for _ in range(100):
        port = free_port(socket.SOCK_DGRAM, host)
        try:
            with socket.socket() as s:
                s.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free for UDP and TCP on %s" % host)


def free_port_all(ips):
    """A TCP port free on every one of ips (the sink listens on all)."""
    for _ in range(50):
        port = free_port()
        try:
            for ip in ips:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((ip, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port on %s" % (ips,))


def wait_until(pred, timeout=10.0, interval=0.1, what="condition"):
    """Poll pred() until it returns a true value; return it or raise."""
    deadline = time.time() + timeout
    while True:
        val = pred()
        if val:
            return val
        if time.time() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def ensure_mail_owner():
    """Daemons drop to mail_owner when started as root; create it if needed.
    Returns None when fine, else why the suite cannot run."""
    try:
        pwd.getpwnam(MAIL_OWNER)
        return None
    except KeyError:
        pass
    if os.geteuid() != 0:
        return "user %r missing and not root (run `make deps` as root)" % MAIL_OWNER
    rc = subprocess.call(["useradd", "--system", "--home-dir", "/nonexistent",
                          "--no-create-home", "--shell", "/usr/sbin/nologin", MAIL_OWNER])
    return None if rc == 0 else "useradd %s failed (rc %d)" % (MAIL_OWNER, rc)


def mail_owner_dir(path):
    """A directory the mail owner may write (the events daemon's event_log
    lives in one); returns path."""
    os.makedirs(path, exist_ok=True)
    pw = pwd.getpwnam(MAIL_OWNER)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def make_tmpdir(prefix):
    """A temp dir the unprivileged mail owner can traverse (not pytest's 0700)."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(d, 0o755)
    return d


# ---------------------------------------------------------------- DNS

def _dns_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def _dns_read_name(msg, off):
    labels, jumped, end = [], False, off
    while True:
        ln = msg[off]
        if ln & 0xC0 == 0xC0:
            if not jumped:
                end = off + 2
            off = ((ln & 0x3F) << 8) | msg[off + 1]
            jumped = True
            continue
        off += 1
        if ln == 0:
            break
        labels.append(msg[off:off + ln].decode())
        off += ln
    return ".".join(labels), (end if jumped else off)


QTYPES = {"A": 1, "MX": 15, "AAAA": 28, "TXT": 16}


def dns_query(port, name, qtype="MX", server="127.0.0.1", timeout=1.0):
    """Minimal DNS client: returns (rcode, answers). MX answers are
    (pref, target), A answers are dotted quads."""
    qid = random.randint(0, 65535)
    pkt = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _dns_name(name) + \
        struct.pack(">HH", QTYPES[qtype], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(pkt, (server, port))
        msg, _ = s.recvfrom(4096)
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    off = 12
    for _ in range(qd):
        _, off = _dns_read_name(msg, off)
        off += 4
    answers = []
    for _ in range(an):
        _, off = _dns_read_name(msg, off)
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        if rtype == 15:
            pref = struct.unpack(">H", rdata[:2])[0]
            target, _ = _dns_read_name(msg, off + 2)
            answers.append((pref, target))
        elif rtype == 1:
            answers.append(socket.inet_ntoa(rdata))
        off += rdlen
    return flags & 0xF, answers


class DnsServer:
    """dnsmasq authoritative for the test names. records: tuples
      ("mx", domain, target, pref)   ("a", name, ip)   ("nullmx", domain)
      ("txt", name, text)  (text split into strings of 255 bytes)"""

    def __init__(self, workdir, records):
        self.workdir = workdir
        self.records = list(records)
        self.port = None
        self.proc = None
        self.log_queries = False  # set before start(): queries() then lists them

    def queries(self):
        """(type, name) of every query dnsmasq logged (log_queries set)."""
        out = []
        try:
            with open(os.path.join(self.workdir, "dnsmasq.log"), errors="replace") as f:
                for line in f:
                    m = re.search(r"query\[(\w+)\] (\S+) from", line)
                    if m:
                        out.append((m.group(1), m.group(2)))
        except OSError:
            pass
        return out

    def _args(self):
        args = []
        for rec in self.records:
            kind = rec[0]
            if kind == "mx":
                args.append("--mx-host=%s,%s,%d" % (rec[1], rec[2], rec[3]))
            elif kind == "a":
                args.append("--host-record=%s,%s" % (rec[1], rec[2]))
            elif kind == "txt":
                text = rec[2]
                parts = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
                # dnsmasq: each comma-separated text is one string
                args.append("--txt-record=%s,%s" % (rec[1], ",".join(parts)))
            elif kind == "nullmx":
                # RFC 7505: preference 0, root target (wire: 00 00 00)
                args.append("--dns-rr=%s,15,000000" % rec[1])
            else:
                raise ValueError("unknown DNS record kind %r" % (kind,))
        return args

    def start(self):
        last = None
        for _ in range(5):  # the port may be taken between probe and bind
            self.port = free_port_udp_tcp()
            cmd = ["/usr/sbin/dnsmasq", "-k", "-p", str(self.port),
                   "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                   "--no-hosts", "-C", "/dev/null", "--user=root", "--local=/test/",
                   "--pid-file=" + os.path.join(self.workdir, "dnsmasq.pid"),
                   "--log-facility=" + os.path.join(self.workdir, "dnsmasq.log")]
            if self.log_queries:
                cmd.append("--log-queries")
            self.proc = subprocess.Popen(cmd + self._args(), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
            # a loaded machine can take seconds to start it; one that exited
            # (its port taken meanwhile) is retried on another port at once
            try:
                if wait_until(self._answers, timeout=15,
                              what="dnsmasq on %d" % self.port) is True:
                    return self
                last = "exited: %s" % self.proc.stderr.read().decode(errors="replace")
            except TimeoutError as e:
                last = e
            self.stop()
        raise RuntimeError("dnsmasq did not start: %s" % last)

    def _answers(self):
        if self.proc.poll() is not None:
            return "exited"
        try:
            rcode, _ = dns_query(self.port, "probe.invalid.test", "A", timeout=0.3)
            return rcode in (0, 3)
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- SMTP sink

class RedisServer:
    """A private redis-server (Debian's) on a free loopback port: no
    persistence, its own directory. stop() and start() again keep the port,
    as a restarted server would; pause()/resume() stall it (SIGSTOP)."""

    BIN = "/usr/bin/redis-server"

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
             "--logfile", os.path.join(self.dir, "redis.log")])
        wait_until(lambda: self.command("PING") == "PONG", timeout=10,
                   what="redis-server on port %d" % self.port)
        return self

    def stop(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def command(self, *args):
        """One command over RESP; the reply's first line without its type
        byte, or None when the server does not answer."""
        req = "*%d\r\n" % len(args) + "".join(
            "$%d\r\n%s\r\n" % (len(str(a).encode()), a) for a in args)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(req.encode())
                line = s.makefile("rb").readline().decode().rstrip("\r\n")
        except OSError:
            return None
        return line[1:] if line else None


class SinkMessage:
    def __init__(self, ip, mail_from, rcpts, content, mail_options=(), smtputf8=False):
        self.ip = ip
        self.mail_options = [o.upper() for o in mail_options]   # as the client sent them
        self.smtputf8 = bool(smtputf8)                          # MAIL FROM had SMTPUTF8
        # aiosmtpd keeps "<>" for the null sender; tests compare with "".
        self.mail_from = "" if mail_from in ("<>", None) else mail_from
        self.rcpts = list(rcpts)
        self.content = content
        self.msg = email.message_from_bytes(content, policy=email.policy.compat32)
        self.time = time.time()

    def __repr__(self):
        return "<SinkMessage ip=%s from=<%s> to=%s id=%s>" % (
            self.ip, self.mail_from, self.rcpts, self.msg.get("Message-ID"))


class _Rule:
    """Scripted answer for RCPT: the first len(replies) matching commands get
    those replies in turn, then `forever` (None = accept)."""

    def __init__(self, match, replies, forever):
        self.match = match
        self.replies = list(replies)
        self.forever = forever

    def applies(self, ip, rcpt):
        if callable(self.match):
            return self.match(ip, rcpt)
        return rcpt.lower() == self.match.lower()

    def next_reply(self):
        if self.replies:
            return self.replies.pop(0)
        return self.forever


class _Handler:
    def __init__(self, sink, ip):
        self.sink = sink
        self.ip = ip

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # The 5-argument hook replaces aiosmtpd's reply: apply the sink's
        # per-address keyword changes (see Sink.set_ehlo).
        session.host_name = hostname
        hide, add = self.sink.ehlo_changes.get(self.ip, (set(), []))
        out = [r for r in responses[:-1] if r[4:].split(" ")[0].upper() not in hide]
        return out + ["250-%s" % k for k in add] + responses[-1:]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.sink.conn_id(session)
        reply = self.sink._rcpt_reply(self.ip, address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        if not envelope.rcpt_tos:
            return "554 5.5.1 no valid recipients"
        if self.sink.data_delay:   # a slow receiver: connections overlap
            await asyncio.sleep(self.sink.data_delay)
        m = SinkMessage(self.ip, envelope.mail_from, envelope.rcpt_tos, envelope.content,
                        envelope.mail_options, getattr(envelope, "smtp_utf8", False))
        m.conn = self.sink.conn_id(session)
        m.peer = session.peer[0] if session.peer else None   # the client's address
        m.helo = session.host_name                          # its EHLO/HELO name
        reply = self.sink._data_reply(self.ip, envelope.rcpt_tos)
        if reply:   # refused at the end of data (Sink.on_data): kept apart
            m.reply = reply
            with self.sink.lock:
                self.sink.data_refused.append(m)
            return reply
        with self.sink.lock:
            self.sink.messages.append(m)
        return "250 2.0.0 Ok: sunk %d" % len(self.sink.messages)


class _CountingSMTP(_AioSMTP):
    """aiosmtpd's SMTP that counts the connections open at its receiver
    (Sink.live/peak/opened) and, with Sink.conn_limit, greets one beyond
    the limit with 421 and hangs up, as providers do."""

    def __init__(self, sink, ip, *a, **kw):
        super().__init__(*a, **kw)
        self._sink, self._ip, self._counted = sink, ip, False

    def connection_made(self, transport):
        if self.transport is None and not self._counted:   # not a STARTTLS re-entry
            self._counted = True
            with self._sink.lock:
                live = self._sink.live.get(self._ip, 0) + 1
                self._sink.live[self._ip] = live
                self._sink.peak[self._ip] = max(self._sink.peak.get(self._ip, 0), live)
                self._sink.opened[self._ip] = self._sink.opened.get(self._ip, 0) + 1
                self._sink.open_times.setdefault(self._ip, []).append(time.time())
                self._client = (transport.get_extra_info("peername") or ("?",))[0]
                clive = self._sink.client_live.get(self._client, 0) + 1
                self._sink.client_live[self._client] = clive
                self._sink.client_peak[self._client] = max(
                    self._sink.client_peak.get(self._client, 0), clive)
                limit = self._sink.conn_limit
                over = limit is not None and live > limit
                if over:
                    self._sink.refused[self._ip] = self._sink.refused.get(self._ip, 0) + 1
            if over:
                transport.write(b"421 4.7.0 too many connections from your IP\r\n")
                transport.close()
                self._sink_lost()
                return
        super().connection_made(transport)

    def _sink_lost(self):
        if self._counted:
            self._counted = False
            with self._sink.lock:
                self._sink.live[self._ip] -= 1
                self._sink.client_live[self._client] -= 1

    def connection_lost(self, error):
        self._sink_lost()
        if self.transport is not None:
            super().connection_lost(error)


class _CountingController(Controller):
    def __init__(self, sink, ip, *a, **kw):
        super().__init__(*a, **kw)
        self._sink, self._ip = sink, ip

    def factory(self):
        return _CountingSMTP(self._sink, self._ip, self.handler, **self.SMTP_kwargs)


class Sink:
    """aiosmtpd receivers on several loopback addresses, one port.
    smtputf8=False: a receiver that does not offer SMTPUTF8 (RFC 6531).
    Per receiver address it counts connections: live (open now), peak (most
    open at once), opened (and open_times), refused (over conn_limit,
    answered 421); per client address client_live and client_peak;
    data_delay makes each DATA take that many seconds."""

    def __init__(self, ips=("127.0.0.1",), port=None, smtputf8=True):
        self.ips = list(ips)
        self.smtputf8 = smtputf8
        self.port = port or free_port_all(self.ips)
        self.lock = threading.Lock()
        self.messages = []
        self.rules = []
        self.rcpt_log = []      # (ip, rcpt, reply, time) for every RCPT seen
        self.controllers = {}
        self.conn_seq = 0       # SMTP sessions seen by MAIL/RCPT/DATA (see conn_id)
        self.ehlo_changes = {}  # ip -> (keywords hidden, keywords added)
        self.live, self.peak, self.opened, self.refused = {}, {}, {}, {}
        self.open_times = {}    # ip -> when each connection came
        self.client_live, self.client_peak = {}, {}  # by the client's address
        self.conn_limit = None  # connections per receiver address (None: any)
        self.data_delay = 0.0
        self.data_rules = []    # Sink.on_data
        self.data_refused = []  # SinkMessages answered by a data rule, with .reply

    def start(self, ips=None):
        for ip in (ips or self.ips):
            if ip in self.controllers:
                continue
            c = _CountingController(self, ip, _Handler(self, ip), hostname=ip, port=self.port,
                           ready_timeout=5, decode_data=False,
                           server_hostname="sink-%s.test" % ip, data_size_limit=0,
                           enable_SMTPUTF8=self.smtputf8)
            c.start()
            self.controllers[ip] = c
        return self

    def stop(self, ips=None):
        for ip in list(ips or self.controllers):
            c = self.controllers.pop(ip, None)
            if c:
                c.stop()

    def set_ehlo(self, ip, hide=(), add=()):
        """Change what the receiver on ip offers in its EHLO reply: hide
        keywords (e.g. "8BITMIME", "SMTPUTF8") and add others (e.g.
        "SIZE 10240000"). Every receiver offers 8BITMIME and SMTPUTF8 unless
        told otherwise (hiding a keyword does not make aiosmtpd refuse it)."""
        with self.lock:
            self.ehlo_changes[ip] = ({k.upper() for k in hide}, list(add))

    def on_rcpt(self, match, replies=(), forever=None):
        """match: address or callable(ip, rcpt). replies are used once each."""
        with self.lock:
            self.rules.append(_Rule(match, replies, forever))

    def on_data(self, match, replies=(), forever=None):
        """Scripted answer at the end of data for a transaction with a
        recipient that match (address or callable(ip, rcpt)) applies to;
        the content so refused is kept in data_refused, not messages."""
        with self.lock:
            self.data_rules.append(_Rule(match, replies, forever))

    def _data_reply(self, ip, rcpts):
        with self.lock:
            for r in self.data_rules:
                if any(r.applies(ip, rcpt) for rcpt in rcpts):
                    return r.next_reply()
            return None

    def _rcpt_reply(self, ip, rcpt):
        with self.lock:
            reply = None
            for r in self.rules:
                if r.applies(ip, rcpt):
                    reply = r.next_reply()
                    break
            self.rcpt_log.append((ip, rcpt, reply or "250", time.time()))
            return reply

    def conn_id(self, session):
        """A number per SMTP connection (aiosmtpd makes one Session object
        per connection; Python ids could be reused, so tag the object)."""
        with self.lock:
            n = getattr(session, "_postino_conn", None)
            if n is None:
                self.conn_seq += 1
                n = session._postino_conn = self.conn_seq
            return n

    def connections(self, pred=None):
        """Distinct connections that carried the messages matching pred."""
        return {m.conn for m in self.received(pred)}

    def received(self, pred=None):
        with self.lock:
            return [m for m in self.messages if pred is None or pred(m)]

    def to(self, rcpt):
        return self.received(lambda m: rcpt.lower() in (r.lower() for r in m.rcpts))

    def wait_for(self, pred=None, count=1, timeout=20.0):
        return wait_until(lambda: (lambda ms: ms if len(ms) >= count else None)(self.received(pred)),
                          timeout=timeout, what="%d message(s) at the sink" % count)

    def wait_to(self, rcpt, count=1, timeout=20.0):
        return self.wait_for(lambda m: rcpt.lower() in (r.lower() for r in m.rcpts),
                             count=count, timeout=timeout)


class AsyncServers:
    """Raw asyncio TCP servers on several loopback addresses sharing one
    port, run on a private event loop thread. Subclasses define
    `async def session(self, key, script, reader, writer)`; `scripts` maps
    key -> (address, script)."""

    def __init__(self, port, scripts):
        self.port = port
        self.scripts = dict(scripts)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.servers = []

    def start(self):
        self.thread.start()
        for key, (ip, script) in self.scripts.items():
            fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(
                lambda r, w, k=key, sc=script: self.session(k, sc, r, w), ip, self.port,
                reuse_address=True), self.loop)
            self.servers.append(fut.result(5))
        return self

    def stop(self):
        async def close():
            for srv in self.servers:
                srv.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class RecordPeer:
    """One connection to a daemon's UNIX socket, speaking the record
    protocol between daemons (common/util/attr.h) as its usual peer does:
    raw records out, reply records in."""

    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.inbuf = b""

    def read_record(self):
        """The next record as a dict, or None at EOF."""
        while b"\n\n" not in self.inbuf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.inbuf += chunk
        rec, self.inbuf = self.inbuf.split(b"\n\n", 1)
        return dict(ln.split("=", 1) for ln in rec.decode().split("\n"))

    def ask(self, record):
        """Send one raw record (bytes); the reply, or None at EOF."""
        self.sock.sendall(record)
        return self.read_record()

    def at_eof(self):
        """The daemon closed its end after its last reply."""
        return self.inbuf == b"" and self.sock.recv(1) == b""

    def close(self):
        self.sock.close()


def record_dropped(path, record, why):
    """Send record on a fresh connection to the daemon at path: it must
    answer status=fail with a reason naming why, then hang up (the one
    policy for a malformed record, common/util/conn.h)."""
    peer = RecordPeer(path)
    try:
        r = peer.ask(record)
        assert r is not None and r["status"] == "fail" and why in r["reason"], r
        assert peer.at_eof(), "the connection stays after a malformed record"
    finally:
        peer.close()


def dsn_parts(msg):
    """Parse an RFC 3464 report: returns (report_msg, per_recipient list of
    dicts with lower-cased field names). Asserts the structure."""
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status", msg.get_param("report-type")
    status = [p for p in msg.walk() if p.get_content_type() == "message/delivery-status"]
    assert len(status) == 1, "expected one message/delivery-status part"
    part = status[0]
    payload = part.get_payload()
    if isinstance(payload, list):     # the email package parses it as header blocks
        blocks = [dict((k.lower(), v) for k, v in b.items()) for b in payload]
    else:
        blocks = []
        for chunk in re.split(r"\r?\n\r?\n", payload.strip()):
            blocks.append(dict((k.strip().lower(), v.strip()) for k, v in
                               (ln.split(":", 1) for ln in chunk.splitlines() if ":" in ln)))
    return blocks[0] if blocks else {}, blocks[1:]


def mime_parts(content):
    """(headers-bytes, body-bytes) of each part of a one-level multipart.
    By hand: Python's email package knows message/delivery-status but takes
    message/global-delivery-status for an encapsulated message (the
    per-message fields as its headers), and decodes UTF-8 lossily there."""
    head, body = content.split(b"\r\n\r\n", 1)
    m = re.search(rb'boundary="([^"]+)"', head)
    assert m, head
    sep = b"--" + m.group(1)
    chunks = body.split(sep)
    parts = []
    for c in chunks[1:]:
        if c.startswith(b"--"):
            break
        ph, pb = c.lstrip(b"\r\n").split(b"\r\n\r\n", 1)
        parts.append((ph, pb))
    return head, parts


def dsn_fields(block):
    out = {}
    for ln in block.decode("utf-8").split("\r\n"):
        if ":" in ln:
            k, v = ln.split(":", 1)
            out[k.strip().lower()] = v.strip()
    return out


def global_dsn_parts(content):
    """Like dsn_parts for an RFC 6533 report (message/global-delivery-status),
    from the raw bytes: (per-message fields, per-recipient field dicts)."""
    _, parts = mime_parts(content)
    status = [pb for ph, pb in parts if b"message/global-delivery-status" in ph]
    assert len(status) == 1, "expected one message/global-delivery-status part"
    blocks = [b for b in status[0].split(b"\r\n\r\n") if b.strip()]
    return dsn_fields(blocks[0]), [dsn_fields(b) for b in blocks[1:]]


# ---------------------------------------------------------------- postino

class Postino:
    """A postino instance in its own temp dir."""

    def __init__(self, sink_port=25, dns_port=None, main=None, master_extra=(), smtpd_procs=2,
                 smtpd_chroot=False):
        self.dir = make_tmpdir("postino-it-")
        self.conf = os.path.join(self.dir, "conf")
        self.spool = os.path.join(self.dir, "spool")
        self.maillog = os.path.join(self.dir, "maillog")
        os.mkdir(self.conf, 0o755)
        self.port = free_port()
        self.sink_port = sink_port
        self.dns_port = dns_port
        self.main = main or {}
        self.master_extra = list(master_extra)
        self.smtpd_procs = smtpd_procs
        self.smtpd_chroot = smtpd_chroot
        self.started = False
        self.write_config()

    # -- configuration
    def main_cf(self):
        p = {
            "queue_directory": self.spool,
            "maillog_file": self.maillog,
            "myhostname": "postino.test",
            "mydestination": "$myhostname, localhost",
            "mynetworks": "127.0.0.0/8",
            "smtp_port": str(self.sink_port),
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "queue_run_delay": "1s",
            "destination_suspend_time": "1s",
            "smtp_connect_timeout": "2s",
            "smtp_connection_cache_time_limit": "1s",
        }
        if self.dns_port:
            p["dns_servers"] = "127.0.0.1:%d" % self.dns_port
        p.update(self.main)
        return "".join("%s = %s\n" % (k, v) for k, v in p.items() if v is not None)

    def master_cf(self):
        lines = ["127.0.0.1:%d inet n - %s - %d smtpd" % (
                     self.port, "y" if self.smtpd_chroot else "n", self.smtpd_procs),
                 "qmgr unix - - n 300 1 qmgr",
                 "smtp unix - - n - 2 delivery",
                 "bounce unix - - n - 1 bounce"]
        # anvil counts per-client limits for smtpd; a test that brings its
        # own anvil row keeps it (master.cf may not name a service twice).
        if not any(ln.split()[:1] == ["anvil"] for ln in self.master_extra):
            lines.append("anvil unix - - n - 1 anvil")
        lines += self.master_extra
        return "\n".join(lines) + "\n"

    def write_config(self):
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(self.main_cf())
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(self.master_cf())
        # the shipped classifier rules, as "make install" puts them next to
        # main.cf (bounce_classifier_rules defaults to that place)
        rules = os.path.join(self.conf, "bounce_classifier_rules")
        if not os.path.exists(rules):
            shutil.copyfile(os.path.join(REPO, "conf", "bounce_classifier_rules"), rules)
        # the shipped shaping rules, likewise (shaping_rules)
        rules = os.path.join(self.conf, "shaping_rules")
        if not os.path.exists(rules):
            shutil.copyfile(os.path.join(REPO, "conf", "shaping_rules"), rules)

    def set(self, **params):
        """Change main.cf parameters (takes effect on start or reload)."""
        self.main.update({k: str(v) for k, v in params.items()})
        self.write_config()

    # -- CLI
    def cli(self, *args, check=False, timeout=30):
        cmd = [os.path.join(BIN, "postino"), "-c", self.conf] + [str(a) for a in args]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, text=True)
        if check and r.returncode != 0:
            raise AssertionError("%s -> rc %d\nstdout: %s\nstderr: %s" % (
                " ".join(cmd), r.returncode, r.stdout, r.stderr))
        return r

    def start(self, timeout=20, wait_qmgr=True):
        """wait_qmgr=False: a test that keeps qmgr from starting on purpose."""
        self.cli("start", check=True, timeout=timeout)
        self.started = True
        self.wait_smtp(timeout)
        if wait_qmgr:
            self.wait_qmgr(timeout)
        return self

    def wait_qmgr(self, timeout=20):
        """qmgr makes public/control once its index is open, which on a
        loaded machine can come after smtpd greets: the CLI's queue
        commands need it. A test whose qmgr cannot start goes on without
        it after the timeout (it checks what it expects itself)."""
        control = os.path.join(self.spool, "public", "control")
        try:
            wait_until(lambda: os.path.exists(control), timeout=timeout,
                       what="qmgr's public/control")
        except TimeoutError:
            pass

    def wait_smtp(self, timeout=20):
        def greets():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    return s.recv(512).startswith(b"220")
            except OSError:
                return False
        wait_until(greets, timeout=timeout, what="postino smtpd on port %d" % self.port)

    def stop(self, timeout=20):
        r = None
        if self.started:
            try:
                r = self.cli("stop", timeout=timeout)
            except subprocess.TimeoutExpired:
                r = None
        self.kill_all()
        self.started = False
        return r

    # -- processes
    def pids(self, names=DAEMONS):
        """Processes of this instance: exe is <BIN>/<name> and the command
        line names this instance's config dir, or the parent is such a master."""
        cands = []
        bindir = os.path.realpath(BIN)
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                exe = os.readlink("/proc/%s/exe" % pid).replace(" (deleted)", "")
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmdline = f.read()
                with open("/proc/%s/stat" % pid) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if os.path.dirname(exe) != bindir:
                continue
            cands.append((os.path.basename(exe), int(pid), ppid, self.conf.encode() in cmdline))
        ours = {pid for _, pid, _, mine in cands if mine}
        found = {}
        for name, pid, ppid, mine in cands:
            if name in names and (mine or ppid in ours):
                found.setdefault(name, []).append(pid)
        return found

    def kill(self, name, sig=signal.SIGKILL):
        pids = self.pids((name,)).get(name, [])
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        return pids

    def kill_all(self):
        """A crash of everything at once: every process is stopped first, so
        no daemon can react to its master's death (the parent-death signal is
        a SIGTERM, which would let qmgr close its index cleanly), then killed."""
        for _ in range(3):
            procs = self.pids()
            if not procs:
                return
            every = [p for pids in procs.values() for p in pids]
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for p in every:
                    try:
                        os.kill(p, sig)
                    except ProcessLookupError:
                        pass
            time.sleep(0.2)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- SMTP
    def smtp(self, timeout=30):
        s = smtplib.SMTP("127.0.0.1", self.port, timeout=timeout)
        s.ehlo("client.test")
        return s

    @staticmethod
    def make_message(mail_from, rcpts, body=None, subject="test", msgid=None, headers=None):
        msgid = msgid or "<%s@it.postino.test>" % uuid.uuid4().hex
        hdrs = ["From: <%s>" % (mail_from or "MAILER-DAEMON"),
                "To: %s" % ", ".join("<%s>" % r for r in rcpts),
                "Subject: %s" % subject, "Message-ID: %s" % msgid]
        hdrs += list(headers or [])
        text = "\r\n".join(hdrs) + "\r\n\r\n" + (body or "Hello from the postino tests.\r\n")
        return text, msgid

    def send(self, mail_from, rcpts, body=None, mail_options=(), rcpt_options=(),
             subject="test", msgid=None, conn=None, raw=None):
        """Send one message; returns the queue id from '250 ... queued as ID'.
        Raises smtplib errors on rejections."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        text = raw
        if text is None:
            text, msgid = Postino.make_message(mail_from, rcpts, body, subject, msgid)
        s = conn or self.smtp()
        try:
            code, resp = s.mail(mail_from, list(mail_options))
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, resp, mail_from)
            ok = 0
            for r in rcpts:
                code, resp = s.rcpt(r, list(rcpt_options))
                if code in (250, 251):
                    ok += 1
                elif len(rcpts) == 1:
                    raise smtplib.SMTPRecipientsRefused({r: (code, resp)})
            code, resp = s.data(text.encode() if isinstance(text, str) else text)
            if code != 250:
                raise smtplib.SMTPDataError(code, resp)
            m = QID_RE.search(resp.decode(errors="replace"))
            assert m, "no queue id in %r" % resp
            return m.group(0)
        finally:
            if conn is None:
                try:
                    s.quit()
                except smtplib.SMTPException:
                    s.close()

    # -- the log
    def log(self):
        try:
            with open(self.maillog, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_lines(self, regex):
        rx = re.compile(regex)
        return [ln for ln in self.log().splitlines() if rx.search(ln)]

    def wait_log(self, regex, count=1, timeout=20.0):
        return wait_until(lambda: (lambda ls: ls if len(ls) >= count else None)(self.log_lines(regex)),
                          timeout=timeout, what="%d log line(s) matching %r" % (count, regex))

    def log_tail(self, n=80):
        return "\n".join(self.log().splitlines()[-n:])

    # -- the queue
    def queue_list(self, check=True):
        """Queue ids listed by `postino queue list` (with their output lines).
        check=False: an error (qmgr not up yet) gives ([], stderr)."""
        r = self.cli("queue", "list", check=check)
        if r.returncode != 0:
            return [], r.stderr
        ids = []
        for ln in r.stdout.splitlines():
            m = QID_RE.search(ln)
            if m and m.group(0) not in ids:
                ids.append(m.group(0))
        return ids, r.stdout

    def queue_files(self):
        out = []
        qdir = os.path.join(self.spool, "queue")
        for root, _, files in os.walk(qdir):
            out += [f for f in files if QID_RE.fullmatch(f)]
        return out

    # -- many queued messages at once (test_qmgr_scan.py, tests/scale) --
    def clone_queue_file(self, qid, n, rcpt_domains=None):
        """n copies of queue file qid under new ids, as smtpd would have
        left them (same owner, mode and records; a queue file names no id
        inside). rcpt_domains: a function i -> domain that replaces the
        domain of every recipient in copy i (the same length as the
        template's, so nothing else in the file moves). Returns the ids."""
        src = self._qfile_path(qid)
        with open(src, "rb") as f:
            data = f.read()
        st = os.stat(src)
        cut = data.index(b"\ncontent\n") + 1  # the envelope ends here
        head, tail = data[:cut], data[cut:]
        old = re.search(rb"\nrcpt=[^@\n]*@([^\n]+)\n", head).group(1)
        ids = []
        base = random.getrandbits(32)
        for i in range(n):
            nid = "%08X%05X%04X" % ((base + i // 0xFFFFF) & 0xFFFFFFFF, i % 0xFFFFF,
                                    os.getpid() & 0xFFFF)
            body = data
            if rcpt_domains:
                dom = rcpt_domains(i).encode()
                assert len(dom) == len(old), (dom, old)
                body = head.replace(b"@" + old + b"\n", b"@" + dom + b"\n") + tail
            path = self._qfile_path(nid)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, body)
            os.fchown(fd, st.st_uid, st.st_gid)
            os.fchmod(fd, st.st_mode & 0o7777)  # the x bit: complete
            os.close(fd)
            ids.append(nid)
        return ids

    def _qfile_path(self, qid):
        """common/mail/qfile.c's qid_hash_dir: FNV-1a, folded."""
        h = 2166136261
        for c in qid.encode():
            h = ((h ^ c) * 16777619) & 0xFFFFFFFF
        h ^= h >> 16
        h ^= h >> 8
        d = os.path.join(self.spool, "queue", "%02x" % (h & 0xFF))
        if not os.path.isdir(d):
            top = os.stat(os.path.dirname(d))
            os.mkdir(d, top.st_mode & 0o7777)
            os.chown(d, top.st_uid, top.st_gid)
        return os.path.join(d, qid)

    def wait_queue_empty(self, timeout=20.0):
        wait_until(lambda: not self.queue_files(), timeout=timeout, what="an empty queue")

    def wait_removed(self, qid, timeout=20.0):
        self.wait_log(r"%s: removed" % qid, timeout=timeout)

    # -- helpers for privilege, reload and admin tests (additive)
    def cli_as(self, user, *args, group=None, timeout=30):
        """Run the CLI as another user (tests run as root): setpriv drops
        real/effective/saved ids and supplementary groups."""
        pw = pwd.getpwnam(user)
        cmd = ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid,
               "--clear-groups", os.path.join(BIN, "postino"), "-c", self.conf] + \
            [str(a) for a in args]
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, text=True)

    def run_as_argv0(self, name, *args, timeout=30):
        """Run the CLI under another program name (a symlink), e.g. mailq."""
        link = os.path.join(self.dir, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(os.path.realpath(BIN), "postino"), link)
        return subprocess.run([link, "-c", self.conf] + [str(a) for a in args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout, text=True)

    def master_pid(self):
        """The master's pid. A child between fork and exec also looks like
        master: its parent is a master, so it is skipped."""
        pids = self.pids(("master",)).get("master", [])
        top = [p for p in pids if _ppid(p) not in pids]
        return top[0] if len(top) == 1 else None

    def child_pids(self):
        """{pid: name} of every daemon of this instance but master."""
        out = {}
        for name, pids in self.pids(tuple(d for d in DAEMONS if d != "master")).items():
            for p in pids:
                out[p] = name
        return out


def _ppid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def proc_ids(pid):
    """(uids, gids) of a process: [real, effective, saved, fs] from /proc."""
    uids = gids = None
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("Uid:"):
                uids = [int(x) for x in ln.split()[1:]]
            elif ln.startswith("Gid:"):
                gids = [int(x) for x in ln.split()[1:]]
    return uids, gids


def smtp_port_accepts(port, timeout=2):
    """True when something on 127.0.0.1:port greets with 220."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            return s.recv(512).startswith(b"220")
    except OSError:
        return False
