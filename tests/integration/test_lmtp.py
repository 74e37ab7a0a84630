"""LMTP (RFC 2033) to a real Dovecot: the delivery agent run as master.cf
service "lmtp" hands mail for a virtual domain to Dovecot's LMTP server
(over a UNIX socket and over TCP) and the tests read it back over IMAP.
Each recipient gets its own reply after the content: an over-quota user
bounces (552 5.2.2) or defers (452 4.2.2) while the others of the same
message are delivered; a stopped Dovecot defers, and the mail goes once it
is back. A scripted LMTP peer (AsyncServers) checks that a reply no
recipient may get, or a hang-up, after the first recipient's reply defers
only the recipients still without one.

Dovecot runs as root from a private configuration in a temp dir (no system
config, base_dir and listeners of its own, passwd-file users, Maildirs
owned by nobody)."""
import email
import imaplib
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import postino_harness as h

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
SENDER = "s@sender.test"
USERS = {
    "alice": "",
    "bob": "",
    "carol": "",
    # over quota at once (1 KB); "full" bounces, "tmpfull" is told to retry
    "full": "userdb_quota_rule=*:storage=1K",
    "tmpfull": "userdb_quota_rule=*:storage=1K userdb_quota_full_tempfail=yes",
}

CONF = """protocols = imap lmtp
instance_name = {name}
base_dir = {d}/run
state_dir = {d}/state
listen = 127.0.0.1
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{d}/mail/%d/%n
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
mail_plugins = quota
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
  default_fields = uid=nobody gid=nogroup home={d}/home/%d/%n
}}
plugin {{
  quota = maildir:User quota
}}
service lmtp {{
  unix_listener {d}/lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


class Dovecot:
    """A private Dovecot: LMTP on <dir>/lmtp and 127.0.0.1:lmtp_port, IMAP
    on 127.0.0.1:imap_port, users of virt.test with password "pw"."""

    def __init__(self):
        self.dir = h.make_tmpdir("dovecot-")
        self.lmtp_port = h.free_port()
        self.imap_port = h.free_port()
        self.socket = os.path.join(self.dir, "lmtp")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(CONF.format(name=os.path.basename(self.dir), d=self.dir,
                                lmtp_port=self.lmtp_port, imap_port=self.imap_port))
        with open(os.path.join(self.dir, "users"), "w") as f:
            for u, extra in USERS.items():
                f.write("%s@virt.test:{PLAIN}pw::::::%s\n" % (u, extra))
        for sub in ("mail", "home"):
            os.mkdir(os.path.join(self.dir, sub))
            shutil.chown(os.path.join(self.dir, sub), "nobody", "nogroup")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        h.wait_until(lambda: os.path.exists(self.socket) and self._listens(),
                     what="dovecot listening")  # the listeners open together
        return self

    def _listens(self):
        import socket
        try:
            # not the LMTP port: the reuse test counts LMTP connections
            socket.create_connection(("127.0.0.1", self.imap_port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if os.path.exists(self.socket):   # a stopped server: nothing listens
            os.unlink(self.socket)

    def log(self):
        try:
            with open(os.path.join(self.dir, "dovecot.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def fetch_all(self, user):
        """Every message in user's INBOX, as stored (bytes)."""
        m = imaplib.IMAP4("127.0.0.1", self.imap_port)
        try:
            m.login(user, "pw")
            m.select("INBOX", readonly=True)
            _, data = m.search(None, "ALL")
            out = []
            for num in data[0].split():
                _, msg = m.fetch(num, "(BODY.PEEK[])")
                out.append(msg[0][1])
            return out
        finally:
            m.logout()

    def wait_mail(self, user, count=1):
        return h.wait_until(lambda: (lambda ms: ms if len(ms) >= count else None)(
            self.fetch_all(user)), timeout=30, what="%d message(s) for %s" % (count, user))


@pytest.fixture
def dovecot():
    if os.geteuid() != 0:
        pytest.fail("the Dovecot tests run Dovecot as root (mail_uid nobody)", pytrace=False)
    d = Dovecot().start()
    yield d
    d.stop()
    shutil.rmtree(d.dir, ignore_errors=True)


def lmtp_postino(postino_factory, nexthop, main=None):
    """postino with virt.test routed to the LMTP client at nexthop."""
    p = postino_factory(start=False, master_extra=["lmtp unix - - n - - delivery"])
    tfile = os.path.join(p.conf, "transport")
    with open(tfile, "w") as f:
        f.write("virt.test lmtp:%s\n" % nexthop)
    p.cli("map", "build", tfile, check=True)
    p.set(transport_maps="hash:" + tfile, **(main or {}))
    p.start()
    return p


def message(rcpts, subject, size=0):
    """A message with lines that need dot-stuffing, long lines and 8-bit
    text, so "byte for byte" means something."""
    body = ("Hello over LMTP.\r\n"
            ".a line that starts with a dot\r\n"
            "..two dots\r\n"
            + "x" * 990 + "\r\n"
            + "caf\u00e9 na\u00efve\r\n"
            + ("filler line to make the message big enough for the quota test\r\n"
               * (size // 64 + 1) if size else "")
            + "last line\r\n")
    text, _ = h.Postino.make_message(SENDER, rcpts, body, subject,
                                     headers=["MIME-Version: 1.0",
                                              "Content-Type: text/plain; charset=utf-8",
                                              "Content-Transfer-Encoding: 8bit"])
    return text.encode("utf-8")


def send(p, rcpts, raw):
    s = p.smtp()
    try:
        s.mail(SENDER, ["BODY=8BITMIME"])
        for r in rcpts:
            assert s.rcpt(r)[0] == 250
        code, resp = s.data(raw)
        assert code == 250, resp
        return h.QID_RE.search(resp.decode()).group(0)
    finally:
        s.quit()


def assert_stored(stored, raw, rcpt):
    """Dovecot puts Return-Path and its Received (and we ours) above what
    the client sent: the client's bytes end the stored message unchanged."""
    assert stored.endswith(raw), (stored[-400:], raw[-400:])
    head = stored[:len(stored) - len(raw)]
    assert b"Return-Path: <%s>" % SENDER.encode() in head, head
    assert b"with LMTP" in head, head
    assert b"by postino.test" in head, head


@pytest.mark.parametrize("chunking", ["yes", "no"])
def test_unix_socket_delivery_read_back_over_imap(postino_factory, dovecot, chunking):
    # Dovecot offers CHUNKING: "yes" ends with BDAT LAST, "no" with the dot
    p = lmtp_postino(postino_factory, "unix:" + dovecot.socket,
                     main={"smtp_chunking_enable": chunking})
    rcpts = ["alice@virt.test", "bob@virt.test"]
    raw = message(rcpts, "over unix " + chunking)
    qid = send(p, rcpts, raw)
    for r in rcpts:
        p.wait_log(r"lmtp\[\d+\]: %s: to=<%s>, relay=postino\.test\[%s\], .*dsn=2\.0\.0, "
                   r"status=sent \(250 2\.0\.0 <%s> .* Saved\)"
                   % (qid, re.escape(r), re.escape(dovecot.socket), re.escape(r)))
    p.wait_removed(qid)
    for r in rcpts:
        [stored] = dovecot.wait_mail(r)
        assert_stored(stored, raw, r)


def test_tcp_delivery_read_back_over_imap(postino_factory, dovecot):
    p = lmtp_postino(postino_factory, "inet:127.0.0.1:%d" % dovecot.lmtp_port)
    raw = message(["carol@virt.test"], "over tcp")
    qid = send(p, ["carol@virt.test"], raw)
    p.wait_log(r"lmtp\[\d+\]: %s: to=<carol@virt\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, "
               r".*status=sent" % (qid, dovecot.lmtp_port))
    [stored] = dovecot.wait_mail("carol@virt.test")
    assert_stored(stored, raw, "carol@virt.test")
    # LHLO, never EHLO, and no MX lookup for an LMTP nexthop
    assert "loops back to myself" not in p.log()


def _dsn_to_sender(sink):
    ms = sink.wait_to(SENDER)
    return ms[0]


@pytest.mark.parametrize("chunking", ["yes", "no"])
def test_over_quota_recipient_bounces_others_delivered(postino_factory, dovecot, sink, chunking):
    p = lmtp_postino(postino_factory, "unix:" + dovecot.socket,
                     main={"smtp_chunking_enable": chunking})
    rcpts = ["alice@virt.test", "full@virt.test", "bob@virt.test"]
    raw = message(rcpts, "quota " + chunking, size=4096)
    qid = send(p, rcpts, raw)
    p.wait_log(r"%s: to=<full@virt\.test>, .*dsn=5\.2\.2, status=bounced \(host postino\.test"
               r"\[%s\] said: 552 5\.2\.2 <full@virt\.test> Quota exceeded .*\(in reply to end "
               r"of DATA command\)\), category=quota-issues" % (qid, re.escape(dovecot.socket)))
    for r in ("alice@virt.test", "bob@virt.test"):
        p.wait_log(r"%s: to=<%s>, .*status=sent" % (qid, re.escape(r)))
        [stored] = dovecot.wait_mail(r)
        assert_stored(stored, raw, r)
    assert dovecot.fetch_all("full@virt.test") == []
    dsn = _dsn_to_sender(sink)
    _, blocks = h.dsn_parts(dsn.msg)
    assert len(blocks) == 1, blocks
    assert blocks[0]["final-recipient"].strip().lower() == "rfc822; full@virt.test"
    assert blocks[0]["status"].strip() == "5.2.2"
    assert blocks[0]["action"].strip() == "failed"
    p.wait_removed(qid)


def test_4xx_recipient_reply_defers_only_that_recipient(postino_factory, dovecot, sink):
    p = lmtp_postino(postino_factory, "unix:" + dovecot.socket)
    rcpts = ["alice@virt.test", "tmpfull@virt.test", "bob@virt.test"]
    raw = message(rcpts, "tempfail", size=4096)
    qid = send(p, rcpts, raw)
    p.wait_log(r"%s: to=<tmpfull@virt\.test>, .*dsn=4\.2\.2, status=deferred \(host "
               r".* said: 452 4\.2\.2 <tmpfull@virt\.test> Quota exceeded" % qid)
    for r in ("alice@virt.test", "bob@virt.test"):
        p.wait_log(r"%s: to=<%s>, .*status=sent" % (qid, re.escape(r)))
    # retried: only the deferred one is tried again, and deferred again
    p.wait_log(r"%s: to=<tmpfull@virt\.test>, .*status=deferred" % qid, count=2, timeout=30)
    assert len(p.log_lines(r"%s: to=<alice@virt\.test>, .*status=sent" % qid)) == 1
    assert len(dovecot.wait_mail("alice@virt.test")) == 1
    assert len(dovecot.wait_mail("bob@virt.test")) == 1
    assert qid in p.cli("queue", "list", check=True).stdout
    assert not sink.received(lambda m: SENDER in m.rcpts)   # no bounce


def test_dovecot_down_defers_then_delivers(postino_factory, dovecot):
    p = lmtp_postino(postino_factory, "unix:" + dovecot.socket)
    dovecot.stop()
    raw = message(["alice@virt.test"], "while down")
    qid = send(p, ["alice@virt.test"], raw)
    p.wait_log(r"%s: to=<alice@virt\.test>, relay=none, .*dsn=4\.4\.1, status=deferred "
               r"\(connect to postino\.test\[%s\]: No such file or directory\)"
               % (qid, re.escape(dovecot.socket)))
    dovecot.start()
    p.wait_log(r"%s: to=<alice@virt\.test>, .*status=sent" % qid, timeout=40)
    [stored] = dovecot.wait_mail("alice@virt.test")
    assert_stored(stored, raw, "alice@virt.test")
    p.wait_removed(qid)


def test_connection_reused_for_the_next_message(postino_factory, dovecot):
    p = lmtp_postino(postino_factory, "inet:127.0.0.1:%d" % dovecot.lmtp_port,
                     main={"smtp_connection_cache_time_limit": "30s"})
    raws = [message(["alice@virt.test"], "reuse %d" % i) for i in range(3)]
    qids = []
    for raw in raws:
        qids.append(send(p, ["alice@virt.test"], raw))
        p.wait_log(r"%s: to=<alice@virt\.test>, .*status=sent" % qids[-1])
    stored = dovecot.wait_mail("alice@virt.test", count=3)
    for raw in raws:
        assert any(s.endswith(raw) for s in stored)
    # one LMTP connection carried all three (Dovecot logs each connect)
    assert dovecot.log().count("Connect from 127.0.0.1") == 1, dovecot.log()


class ScriptedLmtp(h.AsyncServers):
    """An LMTP server that accepts every recipient and answers the content
    with the script's replies ("close": hang up there)."""

    async def session(self, key, script, reader, writer):
        writer.write(b"220 lmtp.test LMTP ready\r\n")
        in_data = False
        while True:
            line = await reader.readline()
            if not line:
                break
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    for reply in script:
                        if reply == "close":
                            writer.close()
                            return
                        writer.write(reply.encode() + b"\r\n")
                continue
            verb = line[:4].upper()
            if verb == b"LHLO":
                writer.write(b"250-lmtp.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif verb in (b"MAIL", b"RSET"):
                writer.write(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                writer.write(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                in_data = True
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                break
            else:
                writer.write(b"500 5.5.1 what\r\n")
            await writer.drain()
        writer.close()


@pytest.mark.parametrize("rest,dsn,why", [
    # a reply no recipient may get after the content: the rest is deferred
    ("354 2.0.0 more please", "4.5.0", r"protocol error: expected 250"),
    # a 2xx other than 250 is no success either (README, LMTP: RFC 5321 4.3.2)
    ("251 2.1.5 will forward", "4.5.0", r"protocol error: expected 250"),
    ("close", "4.4.2", r"lost connection with .* while sending end of data"),
])
def test_bad_reply_after_the_first_recipient_defers_the_rest(postino_factory, rest, dsn, why):
    port = h.free_port()
    srv = ScriptedLmtp(port, {"a": ("127.0.0.1", ["250 2.0.0 <alice@virt.test> Saved", rest])})
    srv.start()
    try:
        p = lmtp_postino(postino_factory, "127.0.0.1:%d" % port)
        rcpts = ["alice@virt.test", "bob@virt.test", "carol@virt.test"]
        qid = send(p, rcpts, message(rcpts, "scripted"))
        p.wait_log(r"%s: to=<alice@virt\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*"
                   r"dsn=2\.0\.0, status=sent \(250 2\.0\.0 <alice@virt\.test> Saved\)"
                   % (qid, port))
        for r in ("bob", "carol"):
            line = p.wait_log(r"%s: to=<%s@virt\.test>, .*status=deferred" % (qid, r))[0]
            assert "dsn=%s," % dsn in line and re.search(why, line), line
        # alice got her reply: she is never sent twice
        p.wait_log(r"%s: to=<bob@virt\.test>, .*status=sent" % qid, timeout=30)
        assert len(p.log_lines(r"%s: to=<alice@virt\.test>" % qid)) == 1
    finally:
        srv.stop()


def test_virtual_mailbox_domain_by_class_to_dovecot(postino_factory, dovecot):
    """The usual set-up, without transport_maps: virt.test is a virtual
    mailbox domain whose users are listed, virtual_transport hands its mail
    to Dovecot over LMTP; an unknown user is refused at RCPT (nothing
    queued), a known one is read back over IMAP."""
    p = postino_factory(start=False, master_extra=["lmtp unix - - n - - delivery"])
    users = os.path.join(p.conf, "vmailbox")
    with open(users, "w") as f:
        f.write("alice@virt.test virt.test/alice/\nbob@virt.test virt.test/bob/\n")
    p.cli("map", "build", users, check=True)
    p.set(virtual_mailbox_domains="virt.test", virtual_mailbox_maps="hash:" + users,
          virtual_transport="lmtp:unix:" + dovecot.socket)
    p.start()
    s = p.smtp()
    try:
        assert s.mail(SENDER)[0] == 250
        code, resp = s.rcpt("nobody-here@virt.test")
        assert code == 550 and b"5.1.1" in resp and b"virtual mailbox table" in resp, resp
    finally:
        s.quit()
    assert not p.queue_files()
    raw = message(["alice@virt.test"], "by class")
    qid = send(p, ["alice@virt.test"], raw)
    p.wait_log(r"lmtp\[\d+\]: %s: to=<alice@virt\.test>, .*status=sent" % qid)
    stored = dovecot.wait_mail("alice@virt.test")
    assert any(b"by class" in m for m in stored)
    assert_stored([m for m in stored if b"by class" in m][0], raw, "alice@virt.test")
