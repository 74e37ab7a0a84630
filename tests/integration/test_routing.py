"""Routing: MX preference and fallback, implicit MX (A only), relayhost,
transport_maps - each checked at the receiving sink and in the log."""
import os
import socket

import postino_harness as h


def _sent_line(p, rcpt):
    return p.wait_log(r"postino/smtp\[\d+\]: [0-9A-Fa-f]+: to=<%s>, relay=.*status=sent" % rcpt)[0]


def test_mx_preferred_host(postino, sink):
    qid = postino.send("s@sender.test", "user@example.test", subject="mx")
    m = sink.wait_to("user@example.test")[0]
    assert m.ip == "127.0.0.2", "lowest-preference MX must get the mail, got %s" % m.ip
    assert m.mail_from == "s@sender.test"
    line = _sent_line(postino, "user@example.test")
    assert "%s: to=<user@example.test>, relay=mx1.example.test[127.0.0.2]:%d" % (qid, sink.port) in line
    assert "dsn=2." in line and "delays=" in line
    postino.wait_removed(qid)
    assert not sink.received(lambda x: x.ip != "127.0.0.2")


def test_mx_fallback_when_first_refuses(postino, sink):
    sink.stop(["127.0.0.2"])          # mx1 refuses connections
    qid = postino.send("s@sender.test", "user@example.test", subject="fallback")
    m = sink.wait_to("user@example.test", timeout=30)[0]
    assert m.ip == "127.0.0.3"
    line = _sent_line(postino, "user@example.test")
    assert "relay=mx2.example.test[127.0.0.3]:%d" % sink.port in line
    postino.wait_removed(qid)


def test_implicit_mx_a_record(postino, sink):
    qid = postino.send("s@sender.test", "user@alonea.test")
    m = sink.wait_to("user@alonea.test")[0]
    assert m.ip == "127.0.0.4"
    assert "relay=alonea.test[127.0.0.4]:%d" % sink.port in _sent_line(postino, "user@alonea.test")
    postino.wait_removed(qid)


def test_relayhost_without_dns(postino_factory, sink):
    # dns_servers points at a port where nothing answers: any DNS use would stall.
    dead_dns = h.free_port(socket.SOCK_DGRAM)
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "dns_servers": "127.0.0.1:%d" % dead_dns})
    qid = p.send("s@sender.test", "someone@nowhere-in-dns.test")
    m = sink.wait_to("someone@nowhere-in-dns.test")[0]
    assert m.ip == "127.0.0.1"
    assert "relay=127.0.0.1[127.0.0.1]:%d" % sink.port in _sent_line(p, "someone@nowhere-in-dns.test")
    p.wait_removed(qid)


def test_transport_maps(postino_factory, sink):
    p = postino_factory(start=False)
    tfile = os.path.join(p.conf, "transport")
    with open(tfile, "w") as f:
        f.write("routed.test smtp:[127.0.0.3]:%d\n" % sink.port)
    p.cli("map", "build", tfile, check=True)
    p.set(transport_maps="hash:" + tfile)
    p.start()
    qid = p.send("s@sender.test", "user@routed.test")
    m = sink.wait_to("user@routed.test")[0]
    assert m.ip == "127.0.0.3"
    p.wait_removed(qid)
