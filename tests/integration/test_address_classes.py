"""Postfix's address classes (issue #10): unknown local, virtual alias,
virtual mailbox and relay recipients refused with 550 5.1.1 at RCPT and
nothing queued for them; known ones routed by class (local_transport,
virtual_transport, relay_transport, default_transport; transport_maps
still wins); virtual_alias_maps expanded at reception (lists, recursion,
loops, duplicates, limits, ORCPT); a domain in two classes refused at
start.

Each class's transport sends to the sink on its own loopback address, so
where a message arrived says which transport qmgr chose."""
import os
import re
import smtplib

import pytest

import postino_harness as h

LOCAL_IP, VIRTUAL_IP, RELAY_IP, DEFAULT_IP, MAPS_IP = (
    "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.1", "127.0.0.5")

TABLES = {
    # what "postino newaliases" makes of "postmaster: root": key, value
    "aliases": "postmaster root\n",
    "virtual": ("info@alias.test staff@postino.test\n"
                "list@alias.test root@postino.test, a@remote.test, team@alias.test\n"
                "team@alias.test b@remote.test, a@remote.test\n"
                "staff@postino.test root@postino.test\n"
                "loop1@postino.test loop2@postino.test\n"
                "loop2@postino.test loop1@postino.test, d@remote.test\n"
                "deep0@alias.test deep1@alias.test\n"
                "deep1@alias.test deep2@alias.test\n"
                "deep2@alias.test end@remote.test\n"
                "wide@alias.test w1@remote.test w2@remote.test w3@remote.test\n"),
    "vmailbox": "u@mbox.test mbox.test/u/\n",
    "relay_recipients": "r@relay.test x\n",
}


def _postino(factory, start=True, master_extra=(), **extra):
    p = factory(start=False, master_extra=master_extra)
    for name, text in TABLES.items():
        path = os.path.join(p.conf, name)
        with open(path, "w") as f:
            f.write(text)
        p.cli("map", "build", path, check=True)
    main = {
        "alias_maps": "hash:$config_directory/aliases",
        "virtual_alias_domains": "alias.test",
        "virtual_alias_maps": "hash:$config_directory/virtual",
        "virtual_mailbox_domains": "mbox.test",
        "virtual_mailbox_maps": "hash:$config_directory/vmailbox",
        "relay_domains": "relay.test",
        "relay_recipient_maps": "hash:$config_directory/relay_recipients",
        "local_transport": "smtp:[%s]" % LOCAL_IP,
        "virtual_transport": "smtp:[%s]" % VIRTUAL_IP,
        "relay_transport": "smtp:[%s]" % RELAY_IP,
        "relayhost": "[%s]" % DEFAULT_IP,
    }
    main.update(extra)
    p.set(**{k: v for k, v in main.items() if v is not None})
    if start:
        p.start()
    return p


UNKNOWN = [
    ("nosuchuser@postino.test", "local recipient table"),
    ("nosuchuser@alias.test", "virtual alias table"),
    ("nosuchuser@mbox.test", "virtual mailbox table"),
    ("nosuchuser@relay.test", "relay recipient table"),
]


def test_unknown_recipients_refused_nothing_queued(postino_factory, sink):
    p = _postino(postino_factory)
    s = p.smtp()
    assert s.mail("sender@client.test")[0] == 250
    for addr, table in UNKNOWN:
        code, resp = s.rcpt(addr)
        assert (code, resp.decode()) == (
            550, "5.1.1 <%s>: Recipient address rejected: User unknown in %s" % (addr, table))
        assert p.log_lines(r"NOQUEUE: reject: RCPT from .*: 550 5\.1\.1 <%s>: Recipient address "
                           r"rejected: User unknown in %s; from=<sender@client\.test> to=<%s>"
                           % (re.escape(addr), table, re.escape(addr)))
    assert s.docmd("DATA")[0] == 503  # no recipient was accepted
    s.quit()
    assert not p.queue_files()
    # Strangers (not in mynetworks) get the same answer, not a relay denial.
    p.set(mynetworks="10.0.0.0/8")
    p.stop()
    p.start()
    s = p.smtp()
    assert s.mail("sender@client.test")[0] == 250
    code, resp = s.rcpt("nosuchuser@relay.test")
    assert code == 550 and b"User unknown in relay recipient table" in resp, (code, resp)
    assert s.rcpt("r@relay.test")[0] == 250
    s.quit()


def test_unknown_among_known_only_known_queued(postino_factory, sink):
    p = _postino(postino_factory)
    s = p.smtp()
    assert s.mail("sender@client.test")[0] == 250
    assert s.rcpt("nosuchuser@postino.test")[0] == 550
    assert s.rcpt("u@mbox.test")[0] == 250
    code, resp = s.data(b"Subject: x\r\n\r\nbody\r\n")
    assert code == 250, (code, resp)
    s.quit()
    m = sink.wait_to("u@mbox.test")[0]
    assert m.rcpts == ["u@mbox.test"], m.rcpts
    p.wait_queue_empty()
    assert not sink.to("nosuchuser@postino.test")


def test_known_recipients_routed_by_class(postino_factory, sink):
    p = _postino(postino_factory)
    rcpts = {"root@postino.test": LOCAL_IP,       # a system user
             "postmaster@postino.test": LOCAL_IP,  # an alias_maps key
             "u@mbox.test": VIRTUAL_IP,
             "r@relay.test": RELAY_IP,
             "x@example.test": DEFAULT_IP}        # relayhost
    p.send("sender@client.test", list(rcpts))
    for rcpt, ip in rcpts.items():
        got = sink.wait_to(rcpt)
        assert [m.ip for m in got] == [ip], (rcpt, [m.ip for m in got])
    p.wait_queue_empty()


def test_transport_maps_wins_over_class(postino_factory, sink):
    tmap = os.path.join(h.make_tmpdir("classes-tmap-"), "transport")
    with open(tmap, "w") as f:
        f.write("mbox.test smtp:[%s]\npostino.test smtp:[%s]\n" % (MAPS_IP, MAPS_IP))
    p = _postino(postino_factory, start=False, transport_maps="hash:" + tmap)
    p.cli("map", "build", tmap, check=True)
    p.start()
    p.send("sender@client.test", ["u@mbox.test", "root@postino.test"])
    for rcpt in ("u@mbox.test", "root@postino.test"):
        assert [m.ip for m in sink.wait_to(rcpt)] == [MAPS_IP]


def test_default_transports_without_overrides(postino_factory, sink):
    """Postfix's defaults: local mail to transport "local", virtual to
    "virtual". Here both master.cf rows run the SMTP delivery agent; its
    log line's site= names the transport and nexthop qmgr chose."""
    p = _postino(postino_factory, local_transport=None, virtual_transport=None,
                 master_extra=["local unix - - n - 1 delivery",
                               "virtual unix - - n - 1 delivery"])
    assert p.cli("config", "local_transport").stdout.strip() == \
        "local_transport = local:postino.test"
    assert p.cli("config", "virtual_transport").stdout.strip() == "virtual_transport = virtual"
    qid = p.send("sender@client.test", ["root@postino.test", "u@mbox.test", "x@example.test"])
    assert [m.ip for m in sink.wait_to("x@example.test")] == [DEFAULT_IP]
    p.wait_log(r"%s: to=<root@postino\.test>, .*site=local:postino\.test" % qid)
    p.wait_log(r"%s: to=<u@mbox\.test>, .*site=virtual:mbox\.test" % qid)


def test_virtual_alias_lists_delivered_once(postino_factory, sink):
    p = _postino(postino_factory)
    # list -> root (local), a@remote, team -> b@remote, a@remote (again);
    # info -> staff -> root (again); the client names root itself too.
    p.send("sender@client.test", ["list@alias.test", "info@alias.test", "root@postino.test"])
    for rcpt, ip in (("root@postino.test", LOCAL_IP), ("a@remote.test", DEFAULT_IP),
                     ("b@remote.test", DEFAULT_IP)):
        sink.wait_to(rcpt)
    p.wait_queue_empty()
    got = {}
    for m in sink.received():
        for r in m.rcpts:
            got.setdefault(r, []).append(m.ip)
    assert got == {"root@postino.test": [LOCAL_IP], "a@remote.test": [DEFAULT_IP],
                   "b@remote.test": [DEFAULT_IP]}, got


def test_virtual_alias_loop_kept_as_is(postino_factory, sink):
    """loop1 -> loop2 -> loop1: the address that comes back to itself is
    kept (Postfix's rule), the others are delivered."""
    p = _postino(postino_factory)
    p.send("sender@client.test", ["loop1@postino.test"])
    assert [m.ip for m in sink.wait_to("loop1@postino.test")] == [LOCAL_IP]
    sink.wait_to("d@remote.test")
    p.wait_queue_empty()
    assert not sink.to("loop2@postino.test")


def test_virtual_alias_orcpt_is_the_original(postino_factory, sink):
    """The queue file holds the rewritten recipients with the address the
    client gave as ORCPT (kept as given when the client sent one)."""
    dead = h.free_port()
    p = _postino(postino_factory, relayhost="[127.0.0.1]:%d" % dead)
    qid = p.send("sender@client.test", ["team@alias.test"])
    qid2 = p.send("sender@client.test", ["deep0@alias.test"],
                  rcpt_options=["ORCPT=rfc822;given@client.test"])
    p.wait_log(r"%s: to=<a@remote\.test>.*status=deferred" % qid)
    show = p.cli("queue", "show", qid, check=True).stdout.split("*** MESSAGE CONTENTS")[0]
    assert "b@remote.test" in show and "a@remote.test" in show, show
    assert "recipient[2]" not in show and "<team@alias.test>" not in show, show
    assert show.count("orcpt") == 2 and "rfc822;team@alias.test" in show, show
    show2 = p.cli("queue", "show", qid2, check=True).stdout.split("*** MESSAGE CONTENTS")[0]
    assert "end@remote.test" in show2 and "rfc822;given@client.test" in show2, show2


@pytest.mark.parametrize("param,rcpt,why", [
    ("virtual_alias_recursion_limit", "deep0@alias.test", "virtual_alias_recursion_limit"),
    ("virtual_alias_expansion_limit", "wide@alias.test", "virtual_alias_expansion_limit"),
])
def test_virtual_alias_limits(postino_factory, sink, param, rcpt, why):
    p = _postino(postino_factory, **{param: "2"})
    s = p.smtp()
    assert s.mail("sender@client.test")[0] == 250
    code, resp = s.rcpt(rcpt)
    assert (code, resp.decode()) == (
        451, "4.3.0 <%s>: Recipient address rejected: alias expansion error" % rcpt)
    s.quit()
    assert p.log_lines(r"warning: .*\(%s\)" % why)
    assert not p.queue_files()
    # within the limits the same tables work
    p.set(**{param: "1000"})
    p.stop()
    p.start()
    p.send("sender@client.test", [rcpt])
    sink.wait_to("end@remote.test" if "deep" in rcpt else "w3@remote.test")


def test_domain_in_two_classes_is_an_error(postino_factory):
    p = _postino(postino_factory, start=False, relay_domains="relay.test, postino.test")
    for cmd in ("check", "start"):
        r = p.cli(cmd)
        assert r.returncode != 0, (cmd, r.stdout, r.stderr)
        assert ("do not list domain postino.test in BOTH mydestination and relay_domains"
                in r.stderr), r.stderr
