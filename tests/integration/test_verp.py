"""VERP return paths (issue #8): one envelope sender per recipient.

sender_verp_maps names a return address by SASL login (sasl:LOGIN), full
sender or @domain; Postfix's XVERP on MAIL FROM makes the sender itself the
return address, for clients in smtpd_authorized_verp_clients only. The
whole system runs (master, smtpd, qmgr, delivery, bounce); the aiosmtpd
sink records the MAIL FROM, the parameters and the content each
recipient got, and on which connection."""
import os
import re
import shutil
import smtplib
import subprocess

import pytest

import postino_harness as h
from test_bdat_out import Tap, _commands

SENDER = "alice@sender.test"       # sender.test: its DSNs reach the sink (127.0.0.5)
RET = "bounces@bounce.example.com"
PASSWORD = "s3cret pw"
HOST = "postino.test"              # the harness's myhostname: the SASL realm


def verp(ret, rcpt, delims="+="):
    local, _, dom = ret.rpartition("@")
    rl, _, rd = rcpt.rpartition("@")
    return "%s%s%s%s%s@%s" % (local, delims[0], rl, delims[1], rd, dom)


def with_map(postino_factory, entries, **main):
    """An instance whose sender_verp_maps is a hash: table of entries."""
    p = postino_factory(start=False)
    src = os.path.join(p.conf, "verp")
    with open(src, "w", encoding="utf-8") as f:
        f.write("".join("%s %s\n" % kv for kv in entries))
    p.cli("map", "build", src, check=True)
    p.set(sender_verp_maps="hash:" + src, **main)
    return p.start()


def froms(sink, rcpts):
    """rcpt -> (MAIL FROM, message) for one message per recipient."""
    out = {}
    for r in rcpts:
        ms = sink.wait_to(r)
        assert len(ms) == 1 and ms[0].rcpts == [r], ms
        out[r] = (ms[0].mail_from, ms[0])
    return out


# ---------------------------------------------------------------- sender_verp_maps

def test_map_by_domain_one_sender_per_recipient(postino_factory, sink):
    """@domain key: each recipient its own transaction and MAIL FROM, on one
    connection; SIZE and BODY still passed; the content (headers) as sent;
    the envelope sender in the queue and the logs stays the original."""
    p = with_map(postino_factory, [("@sender.test", RET)])
    sink.set_ehlo("127.0.0.2", add=["SIZE 10240000"])
    rcpts = ["x@example.test", "y@example.test", "z@example.test"]
    qid = p.send(SENDER, rcpts, mail_options=["BODY=8BITMIME"], subject="verp one")
    got = froms(sink, rcpts)
    for r in rcpts:
        mail_from, m = got[r]
        assert mail_from == verp(RET, r), mail_from
        opts = " ".join(m.mail_options)
        assert "BODY=8BITMIME" in m.mail_options and re.search(r"SIZE=\d+", opts), opts
        assert m.msg["From"] == "<%s>" % SENDER and m.msg["Subject"] == "verp one"
        assert m.msg["Return-Path"] is None
    assert len({got[r][0] for r in rcpts}) == 3
    assert len(sink.connections(lambda m: m.rcpts[0] in rcpts)) == 1
    # the same bytes to every recipient
    assert len({got[r][1].content for r in rcpts}) == 1
    p.wait_removed(qid)
    assert p.log_lines(r"%s: from=<%s>," % (qid, re.escape(SENDER)))
    for r in rcpts:
        assert p.log_lines(r"%s: to=<%s>, .*status=sent" % (qid, re.escape(r)))


def test_queue_file_keeps_sender(postino_factory, sink):
    """The queue file records the VERP choice beside the original sender
    (postino queue show of a deferred message)."""
    p = with_map(postino_factory, [("@sender.test", RET)],
                 minimal_backoff_time="1h", maximal_backoff_time="1h")
    sink.on_rcpt("x@example.test", forever="451 4.3.0 try later")
    qid = p.send(SENDER, "x@example.test")
    p.wait_log(r"%s: to=<x@example\.test>, .*status=deferred" % qid)
    show = p.cli("queue", "show", qid, check=True).stdout
    assert "sender: %s\n" % SENDER in show, show
    assert "verp: +=\n" in show and "verp_return: %s\n" % RET in show, show
    assert sink.rcpt_log and all(x[1] == "x@example.test" for x in sink.rcpt_log)


def test_map_lookup_order(postino_factory, sink):
    """sasl: key aside, the full sender beats @domain; a sender in neither
    goes as before: one transaction for all its recipients."""
    p = with_map(postino_factory, [("@sender.test", RET),
                                   ("bob@sender.test", "bob-bounces@b.example")])
    p.send("bob@sender.test", "x@example.test")
    p.send("carol@sender.test", "y@example.test")
    p.send("dave@other.test", ["u@example.test", "v@example.test"])
    assert sink.wait_to("x@example.test")[0].mail_from == \
        "bob-bounces+x=example.test@b.example"
    assert sink.wait_to("y@example.test")[0].mail_from == verp(RET, "y@example.test")
    m = sink.wait_to("u@example.test")[0]
    assert m.mail_from == "dave@other.test" and sorted(m.rcpts) == ["u@example.test",
                                                                     "v@example.test"]


def test_map_by_source_pool(postino_factory, sink):
    """pool:NAME, the pool sender_dependent_source_pool_maps gives the
    sender, is the last key: one return address for all of a pool's
    senders; a more specific key still wins; a sender of no pool and of no
    key goes as before. (Fails without the pool key: other.test's and
    pool.test's mail went without VERP.)"""
    p = postino_factory(start=False)

    def table(name, rows):
        path = os.path.join(p.conf, name)
        with open(path, "w") as f:
            f.write("".join("%s %s\n" % kv for kv in rows))
        p.cli("map", "build", path, check=True)
        return "hash:" + path

    p.set(sender_verp_maps=table("verp", [("pool:bulk", "pool-bounces@b.example"),
                                          ("@pool.test", "own-bounces@b.example")]),
          source_address_maps=table("addrs", [("127.0.0.11", "helo=one.postino.test")]),
          source_pool_maps=table("pools", [("bulk", "127.0.0.11")]),
          sender_dependent_source_pool_maps=table("senders", [("@other.test", "bulk"),
                                                              ("@pool.test", "bulk")]))
    p.start()
    p.send("news@other.test", "x@example.test")
    p.send("news@pool.test", "y@example.test")
    p.send("dave@plain.test", "z@example.test")
    m = sink.wait_to("x@example.test")[0]
    assert m.mail_from == "pool-bounces+x=example.test@b.example", m.mail_from
    assert m.peer == "127.0.0.11"
    assert sink.wait_to("y@example.test")[0].mail_from == "own-bounces+y=example.test@b.example"
    assert sink.wait_to("z@example.test")[0].mail_from == "dave@plain.test"


def test_null_sender_never_verp(postino_factory, sink):
    p = with_map(postino_factory, [("@sender.test", RET)])
    p.send("", "x@example.test")
    assert sink.wait_to("x@example.test")[0].mail_from == ""


@pytest.mark.parametrize("value", ["no-domain-here", "b\u00f6@bounce.example.com"])
def test_map_bad_value_refused(postino_factory, sink, value):
    """A return address that is not local@domain, or not ASCII: 451 4.3.5
    and a warning, never a broken MAIL FROM on the way out."""
    p = with_map(postino_factory, [("@sender.test", value)])
    s = p.smtp()
    try:
        code, resp = s.mail(SENDER)
        assert (code, resp) == (451, b"4.3.5 Server configuration error"), (code, resp)
    finally:
        s.close()
    assert p.log_lines(r"sender_verp_maps: @sender\.test: bad return address")


def test_utf8_recipient(postino_factory, sink):
    """An SMTPUTF8 recipient's local part and domain go into the return path
    as they are; the transaction says SMTPUTF8."""
    p = with_map(postino_factory, [("@sender.test", RET)])
    rcpt = "jörg@example.test"
    raw = ("From: <%s>\r\nTo: <%s>\r\nSubject: grüße\r\n\r\nHallo\r\n" % (SENDER, rcpt)
           ).encode("utf-8")
    p.send(SENDER, [rcpt, "x@example.test"], raw=raw, mail_options=["SMTPUTF8"])
    m = sink.wait_to(rcpt)[0]
    assert m.mail_from == verp(RET, rcpt) and m.smtputf8, (m.mail_from, m.mail_options)
    assert sink.wait_to("x@example.test")[0].mail_from == verp(RET, "x@example.test")


# ---------------------------------------------------------------- bounces

@pytest.mark.parametrize("pipelining", [False, True])
def test_refused_recipient_bounces_to_original_sender(postino_factory, sink, pipelining):
    """The first recipient is refused at RCPT (no DATA: the next transaction
    starts with RSET, same connection); the second is delivered with its
    VERP sender; the DSN goes to the original sender, null sender. With
    PIPELINING offered, MAIL, RCPT and DATA go in one flight each time."""
    p = with_map(postino_factory, [("@sender.test", RET)])
    if pipelining:
        sink.set_ehlo("127.0.0.2", add=["PIPELINING"])
    sink.on_rcpt("bad@example.test", forever="550 5.1.1 <bad@example.test>: no such user")
    goods = ["good@example.test", "good2@example.test"]
    qid = p.send(SENDER, ["bad@example.test"] + goods)
    got = froms(sink, goods)
    for r in goods:
        assert got[r][0] == verp(RET, r)
    dsn = sink.wait_to(SENDER)[0]
    assert dsn.mail_from == "" and dsn.ip == "127.0.0.5"
    assert b"bad@example.test" in dsn.content and b"5.1.1" in dsn.content
    p.wait_removed(qid)
    assert p.log_lines(r"%s: to=<bad@example\.test>, .*status=bounced" % qid)
    tried = [x[1] for x in sink.rcpt_log if x[1] != SENDER]
    assert tried == ["bad@example.test"] + goods, sink.rcpt_log
    # the good ones on one connection (the one the refused one was tried on)
    assert len(sink.connections(lambda m: m.rcpts[0] in goods)) == 1


def test_postino_to_postino_bdat(postino_factory, sink):
    """A second postino (PIPELINING, CHUNKING) as the next hop: each
    recipient one MAIL, RCPT, BDAT LAST flight on one connection; a
    recipient it refuses costs an RSET before the next transaction. It
    takes the VERP address as the message's envelope sender."""
    access = os.path.join(h.make_tmpdir("verp-access-"), "access")
    with open(access, "w") as f:
        f.write("bad@example.test REJECT no such user\n")
    b = postino_factory(main={"myhostname": "hop2.test"}, start=False)
    b.cli("map", "build", access, check=True)
    b.set(smtpd_recipient_restrictions="check_recipient_access hash:" + access)
    b.start()
    tap = Tap(h.free_port(), b.port).start()
    try:
        a = with_map(postino_factory, [("@sender.test", RET)],
                     relayhost="[127.0.0.1]:%d" % tap.port)
        rcpts = ["bad@example.test", "x@example.test", "y@example.test"]
        qid = a.send(SENDER, rcpts)
        got = froms(sink, rcpts[1:])
        a.wait_removed(qid)
        dsn = sink.wait_to(SENDER)[0]       # via b too: the cached connection
    finally:
        tap.stop()
    for r in rcpts[1:]:
        assert got[r][0] == verp(RET, r)
        assert b.log_lines(r"from=<%s>" % re.escape(verp(RET, r)))
    assert a.log_lines(r"%s: to=<bad@example\.test>, .*status=bounced" % qid)
    assert dsn.mail_from == ""
    cmds = _commands(tap.sent)
    tx = [b"MAIL", b"RCPT", b"BDAT LAST"]
    assert cmds == [b"EHLO"] + tx + [b"RSET"] + tx + tx + [b"RSET"] + tx, cmds
    mails = re.findall(rb"MAIL FROM:<([^>]*)>", tap.sent)
    assert [m.decode() for m in mails] == [verp(RET, r) for r in rcpts] + [""], mails


# ---------------------------------------------------------------- SASL login

@pytest.fixture(scope="module")
def sasldb():
    if not shutil.which("saslpasswd2"):
        pytest.skip("saslpasswd2 (sasl2-bin) not installed")
    d = h.make_tmpdir("verp-sasl-")
    os.chmod(d, 0o755)
    db = os.path.join(d, "sasldb2")
    subprocess.run(["saslpasswd2", "-c", "-p", "-f", db, "-u", HOST, "user"],
                   input=PASSWORD.encode(), check=True, timeout=30)
    os.chmod(db, 0o644)
    with open(os.path.join(d, "smtpd.conf"), "w") as f:
        f.write("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: %s\n"
                "mech_list: PLAIN LOGIN\n" % db)
    yield {"cyrus_sasl_config_path": d, "smtpd_sasl_auth_enable": "yes",
           "smtpd_tls_auth_only": "no", "smtpd_sasl_failure_delay": "0"}
    shutil.rmtree(d, ignore_errors=True)


def test_map_by_sasl_login(postino_factory, sink, sasldb):
    """sasl:LOGIN beats the sender and its domain; without the login the
    domain's entry applies."""
    p = with_map(postino_factory, [("@sender.test", RET),
                                   (SENDER, "sender-bounces@b.example"),
                                   ("sasl:user", "login-bounces@l.example")], **sasldb)
    s = p.smtp()
    s.ehlo("client.test")
    s.login("user", PASSWORD)
    p.send(SENDER, "x@example.test", conn=s)
    s.quit()
    assert sink.wait_to("x@example.test")[0].mail_from == \
        "login-bounces+x=example.test@l.example"
    p.send(SENDER, "y@example.test")
    assert sink.wait_to("y@example.test")[0].mail_from == \
        "sender-bounces+y=example.test@b.example"


# ---------------------------------------------------------------- XVERP

def test_xverp_authorised_client(postino_factory, sink):
    """127.0.0.1 is in mynetworks, the default of smtpd_authorized_verp_clients:
    XVERP is offered; the sender is the return address; XVERP=-= picks other
    delimiters; XVERP wins over sender_verp_maps."""
    p = with_map(postino_factory, [("@sender.test", RET)])
    s = p.smtp()
    s.ehlo("client.test")
    assert s.has_extn("xverp")
    p.send(SENDER, ["x@example.test", "y@example.test"], mail_options=["XVERP"], conn=s)
    p.send(SENDER, "z@example.test", mail_options=["XVERP=-="], conn=s)
    s.quit()
    assert sink.wait_to("x@example.test")[0].mail_from == "alice+x=example.test@sender.test"
    assert sink.wait_to("y@example.test")[0].mail_from == "alice+y=example.test@sender.test"
    assert sink.wait_to("z@example.test")[0].mail_from == "alice-z=example.test@sender.test"


def test_verp_delimiters_from_main_cf(postino_factory, sink):
    """verp_delimiters = -= in main.cf shapes the map's return paths and a
    bare XVERP's; XVERP=+= still picks its own."""
    p = with_map(postino_factory, [("@sender.test", RET)], verp_delimiters="-=")
    p.send(SENDER, "x@example.test")
    s = p.smtp()
    s.ehlo("client.test")
    p.send("bob@other.test", "y@example.test", mail_options=["XVERP"], conn=s)
    p.send("bob@other.test", "z@example.test", mail_options=["XVERP=+="], conn=s)
    s.quit()
    assert sink.wait_to("x@example.test")[0].mail_from == \
        "bounces-x=example.test@bounce.example.com"
    assert sink.wait_to("y@example.test")[0].mail_from == "bob-y=example.test@other.test"
    assert sink.wait_to("z@example.test")[0].mail_from == "bob+z=example.test@other.test"


def test_xverp_refused_for_other_clients(postino_factory, sink):
    """A client outside smtpd_authorized_verp_clients is not offered XVERP
    and gets Postfix's reply for an unknown option."""
    p = postino_factory(main={"smtpd_authorized_verp_clients": "10.0.0.0/8"})
    s = p.smtp()
    try:
        s.ehlo("client.test")
        assert not s.has_extn("xverp")
        assert s.mail(SENDER, ["XVERP"]) == (555, b"5.5.4 Unsupported option: XVERP")
        assert s.mail(SENDER, ["XVERP=+="]) == (555, b"5.5.4 Unsupported option: XVERP")
        assert s.mail(SENDER)[0] == 250
    finally:
        s.close()


def test_xverp_syntax(postino_factory):
    p = postino_factory()
    s = p.smtp()
    try:
        s.ehlo("client.test")
        assert s.mail("", ["XVERP"]) == (503, b"5.5.4 Error: XVERP requires non-null sender")
        assert s.mail(SENDER, ["XVERP=+"]) == \
            (501, b"5.5.4 Error: XVERP needs two characters from -=+")
        with pytest.raises(smtplib.SMTPSenderRefused):
            p.send(SENDER, "x@example.test", mail_options=["XVERP=ab"], conn=s)
    finally:
        s.close()
