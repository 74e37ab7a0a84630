"""Source addresses and pools (issue #9): which local address and HELO name
outgoing mail leaves from, as the receiver sees them.

Every instance relays to the aiosmtpd sink on 127.0.0.1, which records each
message's client address (session.peer) and EHLO name. Pools are hash:
tables built with "postino map build" before the start:
source_address_maps (ip -> helo=, weight=, warmup=), source_pool_maps
(pool -> addresses), sender_dependent_source_pool_maps (@domain -> pool).
The SASL and DKIM cases reuse the fixtures of test_submission and
test_dkim. All of 127.0.0.0/8 is on lo, so 127.0.0.11 and friends bind; 192.0.2.1
(TEST-NET-1) is on no interface, so binding it fails with EADDRNOTAVAIL."""
import os
import re

import postino_harness as h
from test_dkim import assert_verifies, keys, signatures, tag  # noqa: F401 (keys: a fixture)
from test_dkim import message as dkim_message
from test_submission import OUTSIDE, PASSWORD, secrets  # noqa: F401 (a fixture)

ADDRS = {
    "127.0.0.11": "helo=one.postino.test",
    "127.0.0.12": "helo=two.postino.test",
    "127.0.0.13": "helo=w3.postino.test weight=3",
    "127.0.0.14": "helo=w1.postino.test weight=1",
    "127.0.0.15": "helo=good.postino.test",
    "192.0.2.1": "helo=gone.postino.test weight=10",
    "127.0.0.16": "helo=warm.postino.test warmup=2,10,100 warmup_start=2020-01-01",
    "127.0.0.17": "helo=fresh.postino.test warmup=2,10,100",
}

POOLS = {
    "one": "127.0.0.11",
    "two": "127.0.0.12",
    "weighted": "127.0.0.13, 127.0.0.14",
    "flaky": "192.0.2.1 127.0.0.15",
    "warm": "127.0.0.17",
}

SENDERS = {
    "@a.example": "one",
    "@b.example": "two",
    "@w.example": "weighted",
    "@f.example": "flaky",
    "@warm.example": "warm",
}


def _table(p, name, rows):
    path = os.path.join(p.conf, name)
    with open(path, "w") as f:
        for k, v in rows.items():
            f.write("%s %s\n" % (k, v))
    p.cli("map", "build", path, check=True)
    return "hash:" + path


def _pool_postino(postino_factory, sink, pools=POOLS, **main):
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port}, start=False)
    p.set(source_address_maps=_table(p, "source_addresses", ADDRS),
          source_pool_maps=_table(p, "source_pools", pools),
          sender_dependent_source_pool_maps=_table(p, "source_pool_senders", SENDERS),
          **main)
    p.start()
    return p


def _from(sink, rcpt):
    m = sink.wait_to(rcpt)[0]
    return m.peer, m.helo


def test_two_pools_by_sender_domain(postino_factory, sink):
    p = _pool_postino(postino_factory, sink)
    p.send("news@a.example", "r1@dest.test")
    p.send("news@b.example", "r2@dest.test")
    assert _from(sink, "r1@dest.test") == ("127.0.0.11", "one.postino.test")
    assert _from(sink, "r2@dest.test") == ("127.0.0.12", "two.postino.test")


def test_default_pool_then_unbound(postino_factory, sink):
    # A sender no table names takes the pool "default" ...
    pools = dict(POOLS, default="127.0.0.12")
    p = _pool_postino(postino_factory, sink, pools=pools)
    p.send("someone@other.example", "r1@dest.test")
    assert _from(sink, "r1@dest.test") == ("127.0.0.12", "two.postino.test")
    p.stop()
    # ... and without one the connection is not bound: the kernel picks
    # 127.0.0.1 for the sink on 127.0.0.1, with smtp_helo_name.
    p2 = _pool_postino(postino_factory, sink)
    p2.send("someone@other.example", "r2@dest.test")
    assert _from(sink, "r2@dest.test") == ("127.0.0.1", "postino.test")


def test_smtp_bind_address_without_pools(postino_factory, sink):
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "smtp_bind_address": "127.0.0.18",
                              "smtp_helo_name": "bound.postino.test"})
    p.send("x@a.example", "r1@dest.test")
    assert _from(sink, "r1@dest.test") == ("127.0.0.18", "bound.postino.test")


def test_weighted_round_robin(postino_factory, sink):
    p = _pool_postino(postino_factory, sink)
    for i in range(8):
        p.send("bulk@w.example", "w%d@dest.test" % i)
    msgs = sink.wait_for(lambda m: m.rcpts[0].startswith("w"), count=8)
    peers = [m.peer for m in msgs]
    # weights 3:1 over 8 picks: exactly 6 and 2, each with its own name
    assert peers.count("127.0.0.13") == 6 and peers.count("127.0.0.14") == 2, peers
    assert {(m.peer, m.helo) for m in msgs} == {("127.0.0.13", "w3.postino.test"),
                                                ("127.0.0.14", "w1.postino.test")}


def test_header_picks_pool_and_is_removed(postino_factory, sink):
    p = _pool_postino(postino_factory, sink)
    raw = ("From: news@a.example\r\nTo: r1@dest.test\r\nSubject: pooled\r\n"
           "X-Postino-Pool: two\r\nMessage-ID: <pool1@a.example>\r\n\r\nbody\r\n")
    p.send("news@a.example", "r1@dest.test", raw=raw)
    # folded, with a continuation line, and the name in other case
    raw2 = ("From: news@b.example\r\nx-postino-pool:\r\n one\r\nTo: r2@dest.test\r\n"
            "Subject: pooled 2\r\n\r\nbody 2\r\n")
    p.send("news@b.example", "r2@dest.test", raw=raw2)
    m1, m2 = sink.wait_to("r1@dest.test")[0], sink.wait_to("r2@dest.test")[0]
    assert (m1.peer, m1.helo) == ("127.0.0.12", "two.postino.test")
    assert (m2.peer, m2.helo) == ("127.0.0.11", "one.postino.test")
    for m in (m1, m2):
        assert b"postino-pool" not in m.content.lower(), m.content
        assert m.msg["Subject"].startswith("pooled"), m.content
    assert m2.msg["To"] == "r2@dest.test"   # the field after the folded one is intact


def test_unbindable_address_is_skipped(postino_factory, sink):
    p = _pool_postino(postino_factory, sink)
    for i in range(4):
        p.send("bulk@f.example", "f%d@dest.test" % i)
    msgs = sink.wait_for(lambda m: m.rcpts[0].startswith("f"), count=4)
    assert {(m.peer, m.helo) for m in msgs} == {("127.0.0.15", "good.postino.test")}
    # taken out once, logged once; the jobs were not deferred for it
    out = p.log_lines(r"source address 192\.0\.2\.1 taken out of its pools")
    assert len(out) == 1, out
    assert "Cannot assign requested address" in out[0], out
    assert not p.log_lines(r"to=<f\d@dest\.test>.*status=deferred")


def test_warmup_cap_holds(postino_factory, sink):
    # 127.0.0.17 is on the first day of its schedule: 2 messages today.
    p = _pool_postino(postino_factory, sink)
    ids = [p.send("bulk@warm.example", "c%d@dest.test" % i) for i in range(3)]
    sink.wait_for(lambda m: m.rcpts[0].startswith("c"), count=2)
    p.wait_log(r"to=<c\d@dest\.test>.*status=deferred \(no source address available")
    got = sink.received(lambda m: m.rcpts[0].startswith("c"))
    assert len(got) == 2 and {m.peer for m in got} == {"127.0.0.17"}
    # the count survives a restart (index/source_warmup): still capped
    p.stop()
    with open(os.path.join(p.spool, "index", "source_warmup")) as f:
        assert re.search(r"^127\.0\.0\.17 \d+ 2$", f.read(), re.M)
    p.start()
    p.send("bulk@warm.example", "c9@dest.test")
    p.wait_log(r"to=<c9@dest\.test>.*status=deferred \(no source address available")
    assert len(sink.received(lambda m: m.rcpts[0].startswith("c"))) == 2
    assert ids


def test_pool_by_sasl_login(postino_factory, sink, secrets):  # noqa: F811
    """sasl:LOGIN comes before the sender's @domain."""
    import smtplib
    import ssl
    senders = dict(SENDERS, **{"sasl:user": "two"})
    p = postino_factory(main=dict(secrets, mynetworks=OUTSIDE, smtpd_sasl_auth_enable="yes",
                                  smtpd_tls_security_level="may", smtpd_sasl_failure_delay="0",
                                  relayhost="[127.0.0.1]:%d" % sink.port), start=False)
    p.set(source_address_maps=_table(p, "source_addresses", ADDRS),
          source_pool_maps=_table(p, "source_pools", POOLS),
          sender_dependent_source_pool_maps=_table(p, "source_pool_senders", senders))
    p.start()
    s = smtplib.SMTP("127.0.0.1", p.port, timeout=30)
    s.ehlo("client.test")
    s.starttls(context=ssl._create_unverified_context())
    s.ehlo("client.test")
    s.login("user", PASSWORD)
    p.send("news@a.example", "s1@dest.test", conn=s)
    s.quit()
    assert _from(sink, "s1@dest.test") == ("127.0.0.12", "two.postino.test")


def test_pool_header_is_not_signed(postino_factory, sink, keys):  # noqa: F811
    """The header is gone before the content is hashed: the signature does
    not name it (even when dkim_signed_headers does) and verifies."""
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "dkim_key_maps": keys["table"],
                              "dkim_signed_headers": "From, To, Subject, X-Postino-Pool"},
                        start=False)
    p.set(source_address_maps=_table(p, "source_addresses", ADDRS),
          source_pool_maps=_table(p, "source_pools", POOLS))
    p.start()
    p.send("s@sign.test", "d1@dest.test",
           raw=dkim_message(b"s@sign.test", extra=b"X-Postino-Pool: one\r\n", to=b"d1@dest.test"))
    m = sink.wait_to("d1@dest.test")[0]
    assert (m.peer, m.helo) == ("127.0.0.11", "one.postino.test")
    assert b"postino-pool" not in m.content.lower()
    sigs = signatures(m.content)   # sign.test has an RSA and an Ed25519 key
    assert len(sigs) == 2 and all("x-postino-pool" not in tag(s, "h").lower() for s in sigs)
    assert_verifies(m.content, keys, n=2)


def _per_source_run(postino_factory, sink, row, n=30):
    """n messages to one site from a pool of 127.0.0.11 (weight 10) and
    127.0.0.12 through a slow receiver, with shaping row `row` for every
    site; the receiver's peaks per client address and in all."""
    sink.data_delay = 0.3
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port}, start=False)
    p.set(source_address_maps=_table(p, "source_addresses",
                                      {"127.0.0.11": "helo=one.postino.test weight=10",
                                       "127.0.0.12": "helo=two.postino.test"}),
          source_pool_maps=_table(p, "source_pools", {"default": "127.0.0.11 127.0.0.12"}),
          shaping_maps=_table(p, "shaping", {"default": row}))
    p.start()
    s = p.smtp()
    try:
        for i in range(n):
            p.send("news@campaign.test", "c%d@dest.test" % i, conn=s)
    finally:
        s.quit()
    sink.wait_for(count=n, timeout=120)
    return sink.client_peak, sink.peak.get("127.0.0.1", 0)


def test_max_connections_per_source(postino_factory, sink):
    """max_connections_per_source holds per address at the receiver, and
    the site's max_connections over both together."""
    by_client, total = _per_source_run(postino_factory, sink,
                                       "max_connections=3 max_connections_per_source=2")
    assert 1 <= by_client.get("127.0.0.11", 0) <= 2, by_client
    assert 1 <= by_client.get("127.0.0.12", 0) <= 2, by_client
    assert total <= 3, total


def test_without_per_source_limit_one_address_takes_more(postino_factory, sink):
    # The control: the same load with only the site's limit puts three
    # connections on the heavier address (so the limit above is what holds).
    by_client, total = _per_source_run(postino_factory, sink, "max_connections=3")
    assert by_client.get("127.0.0.11", 0) == 3, by_client
    assert total <= 3, total
