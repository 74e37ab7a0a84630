"""Fixtures for postino's end-to-end tests: dns (dnsmasq), sink (aiosmtpd
receivers on 127.0.0.1-5), postino (a running instance in a temp dir).

Default DNS zone (extend per test with @pytest.mark.dns(records)):
  example.test  MX 10 mx1.example.test (127.0.0.2), MX 20 mx2.example.test (127.0.0.3)
  alonea.test   A 127.0.0.4 only (no MX: implicit MX)
  sender.test   MX 10 mx.sender.test (127.0.0.5) - senders, so DSNs are captured
  nomail.test   null MX (RFC 7505)
"""
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import postino_harness as h  # noqa: E402

SINK_IPS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
DEFAULT_RECORDS = [
    ("mx", "example.test", "mx1.example.test", 10),
    ("mx", "example.test", "mx2.example.test", 20),
    ("a", "mx1.example.test", "127.0.0.2"),
    ("a", "mx2.example.test", "127.0.0.3"),
    ("a", "alonea.test", "127.0.0.4"),
    ("mx", "sender.test", "mx.sender.test", 10),
    ("a", "mx.sender.test", "127.0.0.5"),
    ("nullmx", "nomail.test"),
]


def pytest_configure(config):
    config.addinivalue_line("markers", "dns(records): extra DNS records for the dns fixture")
    config.addinivalue_line("markers", "slow: long-running test (still part of make test)")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Remember each phase's outcome so fixtures can print the maillog on failure.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def postino_bin():
    missing = [p for p in h.DAEMONS + ("postino",)
               if not os.access(os.path.join(h.BIN, p), os.X_OK)]
    if missing:   # a build that lost a program must not pass by skipping
        pytest.fail("postino programs not built in %s: %s (run `make all`)"
                    % (h.BIN, ", ".join(missing)), pytrace=False)
    why = h.ensure_mail_owner()
    if why:
        pytest.fail(why, pytrace=False)
    return h.BIN


@pytest.fixture
def workdir():
    d = h.make_tmpdir("postino-aux-")
    yield d
    import shutil
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def dns(request, workdir):
    records = list(DEFAULT_RECORDS)
    for m in request.node.iter_markers("dns"):
        records += list(m.args[0])
    srv = h.DnsServer(workdir, records).start()
    yield srv
    srv.stop()


@pytest.fixture
def redis(workdir):
    """A private redis-server on a free port (skips without redis-server)."""
    if not os.access(h.RedisServer.BIN, os.X_OK):
        pytest.skip("redis-server is not installed (make deps)")
    r = h.RedisServer(workdir).start()
    yield r
    r.stop()


@pytest.fixture
def sink():
    s = h.Sink(SINK_IPS).start()
    yield s
    s.stop()


SANITIZER_RX = re.compile(r"ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer|"
                          r"\]: panic: |AddressSanitizer:DEADLYSIGNAL")


@pytest.fixture
def postino_factory(request, postino_bin, dns, sink):
    """make(main={...}, start=True, **kw) -> Postino. Instances are stopped
    (postino stop, then kill -9 of leftovers) at teardown; on failure the
    maillog tail is printed."""
    made = []

    def make(main=None, start=True, **kw):
        p = h.Postino(sink_port=sink.port, dns_port=dns.port, main=main, **kw)
        made.append(p)
        if start:
            p.start()
        return p

    yield make
    failed = any(getattr(request.node, "rep_" + w, None) is not None and
                 getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
    broken = []
    for p in made:
        p.stop()
        # A daemon's sanitizer report or panic lands in the maillog (master
        # points the children's stderr there): that fails the test even
        # when the mail itself went through.
        bad = [ln for ln in p.log().splitlines() if SANITIZER_RX.search(ln)]
        if bad:
            broken.append((p.dir, bad))
            failed = True
        if failed:
            sys.stderr.write("\n==== maillog of %s (tail) ====\n%s\n" % (p.dir, p.log_tail(120)))
            sys.stderr.write("==== kept %s for inspection ====\n" % p.dir)
        else:
            p.cleanup()
    if broken:
        pytest.fail("daemon sanitizer report or panic in %s:\n%s" % (
            broken[0][0], "\n".join(broken[0][1][:20])))


@pytest.fixture
def postino(postino_factory):
    """A running instance that routes by MX through the test DNS."""
    return postino_factory()


@pytest.fixture
def relay_postino(postino_factory, sink):
    """A running instance that sends everything to the sink on 127.0.0.1
    (mail for its own domains too: postmaster's double bounces)."""
    return postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                                 "local_transport": "smtp:[127.0.0.1]:%d" % sink.port})
