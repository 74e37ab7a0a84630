"""Cipher grades per service (issue #7): submission (587, STARTTLS
required) and smtps (465, wrapper mode) offer only forward-secret AEAD
suites below TLS 1.3; the port 25-style service stays broad for
opportunistic TLS but offers nothing broken.

A real postino (master and its services from master.cf) with a test
certificate; the peers are `openssl s_client`, which asks for exactly one
TLS 1.2 suite per handshake, and Debian's testssl.sh, run hermetically
(loopback address, no DNS) with its vulnerability checks only.
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile

import pytest

import postino_harness as h

HOST = "mx.test"

# Suites a submission service must refuse: static RSA key exchange (CBC
# and GCM), ECDHE with CBC and an HMAC-SHA1 or -SHA256/384 MAC.
WEAK = ("AES128-SHA", "AES256-GCM-SHA384", "AES128-GCM-SHA256", "AES256-SHA256",
        "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384")
# Forward secrecy and AEAD: what a submission service offers below TLS 1.3.
GOOD = ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305")
# Port 25 keeps these for old MTAs (opportunistic TLS beats plaintext) ...
BROAD = ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES128-GCM-SHA256")
# ... but never NULL encryption or anonymous key exchange.
BROKEN = ("NULL-SHA256", "ECDHE-RSA-NULL-SHA", "ADH-AES128-SHA", "AECDH-AES128-SHA")


@pytest.fixture(scope="module")
def cert():
    d = tempfile.mkdtemp(prefix="tls-grades-cert-")
    os.chmod(d, 0o755)
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=" + HOST,
                    "-addext", "subjectAltName=DNS:" + HOST],
                   check=True, capture_output=True, timeout=60)
    yield {"smtpd_tls_cert_file": crt, "smtpd_tls_key_file": key}
    shutil.rmtree(d, ignore_errors=True)


def _listening(ip, port):
    try:
        socket.create_connection((ip, port), timeout=1).close()
        return True
    except OSError:
        return False


def _port_free(ip, port):
    with socket.socket() as s:
        try:
            s.bind((ip, port))
            return True
        except OSError:
            return False


@pytest.fixture
def services(postino_factory, cert):
    """postino with the harness's port 25-style smtpd (STARTTLS offered),
    a submission row (587-style: STARTTLS required) and an smtps row
    (465-style: wrapper mode) on free ports, as in the shipped master.cf
    but without cipher options: the grades are the defaults."""
    sub, smtps = h.free_port(), h.free_port()
    while smtps == sub:
        smtps = h.free_port()
    rows = ["127.0.0.1:%d inet n - n - 1 smtpd -o syslog_name=postino/submission "
            "-o smtpd_tls_security_level=encrypt" % sub,
            "127.0.0.1:%d inet n - n - 1 smtpd -o syslog_name=postino/smtps "
            "-o smtpd_tls_wrappermode=yes" % smtps]
    main = dict(cert, smtpd_tls_security_level="may")
    p = postino_factory(main=main, master_extra=rows)
    for port in (sub, smtps):
        h.wait_until(lambda: _listening("127.0.0.1", port), what="port %d" % port)
    p.sub_port, p.smtps_port = sub, smtps
    return p


def client_offers(suite):
    """Our openssl must be able to ask for the suite, or a refusal proves
    nothing."""
    r = subprocess.run(["openssl", "ciphers", "-s", "-tls1_2", suite + ":@SECLEVEL=0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and suite in r.stdout.strip().split(":"), \
        "this openssl cannot offer %s: %s" % (suite, r.stdout + r.stderr)


def handshake(port, suite, starttls, ip="127.0.0.1"):
    """TLS 1.2 with exactly `suite` on offer: the suite the server chose,
    or None when the handshake failed; plus openssl's output."""
    client_offers(suite)
    cmd = ["openssl", "s_client", "-connect", "%s:%d" % (ip, port), "-tls1_2",
           "-cipher", suite + ":@SECLEVEL=0", "-brief"]
    if starttls:
        cmd += ["-starttls", "smtp", "-name", "client.test"]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    m = re.search(r"^Ciphersuite: (\S+)", out, re.M)
    return (m.group(1) if r.returncode == 0 and m else None), out


def assert_strict(port, starttls, what):
    for suite in WEAK:
        got, out = handshake(port, suite, starttls)
        assert got is None, "%s accepted %s:\n%s" % (what, suite, out)
    for suite in GOOD:
        got, out = handshake(port, suite, starttls)
        assert got == suite, "%s refused %s:\n%s" % (what, suite, out)


def test_submission_and_smtps_offer_only_aead_with_forward_secrecy(services):
    assert_strict(services.sub_port, True, "submission")
    assert_strict(services.smtps_port, False, "smtps")


def test_port_25_stays_broad_but_not_broken(services):
    for suite in BROAD:
        got, out = handshake(services.port, suite, True)
        assert got == suite, "port 25 refused %s:\n%s" % (suite, out)
    for suite in BROKEN:
        got, out = handshake(services.port, suite, True)
        assert got is None, "port 25 accepted %s:\n%s" % (suite, out)


def test_submission_port_without_options_is_strict(postino_factory, cert):
    """A hand-written `587 inet ... smtpd` row without -o options still
    gets the strict grade: on the submission ports (587, 465) smtpd uses
    the mandatory-TLS settings even where TLS is only offered. The row
    listens on a random 127/8 address, since 587 is one fixed port."""
    for _ in range(20):
        ip = "127.%d.%d.%d" % (random.randint(1, 254), random.randint(0, 254),
                               random.randint(1, 254))
        if _port_free(ip, 587):
            break
    else:
        pytest.fail("no 127/8 address with port 587 free")
    p = postino_factory(main=dict(cert, smtpd_tls_security_level="may"),
                        master_extra=["%s:587 inet n - n - 1 smtpd" % ip])
    h.wait_until(lambda: _listening(ip, 587), what="%s:587" % ip)
    for suite in ("AES128-SHA", "ECDHE-RSA-AES128-SHA"):
        got, out = handshake(587, suite, True, ip=ip)
        assert got is None, "%s:587 accepted %s:\n%s" % (ip, suite, out)
    got, out = handshake(587, GOOD[0], True, ip=ip)
    assert got == GOOD[0], out
    # the harness's own row on a random port is port 25-style: broad
    got, out = handshake(p.port, "AES128-SHA", True)
    assert got == "AES128-SHA", out


# ---------------------------------------------------------------- testssl.sh

# What testssl.sh -U checks on an SMTP server (Ticketbleed and BREACH are
# HTTP-only); each must be reported.
VULN_IDS = ("heartbleed", "CCS", "ROBOT", "secure_renego",
            "secure_client_renego", "CRIME_TLS", "POODLE_SSL", "fallback_SCSV",
            "SWEET32", "FREAK", "DROWN", "LOGJAM", "BEAST", "LUCKY13", "RC4")
ACCEPTABLE = ("OK", "INFO", "LOW", "DEBUG")


def run_testssl(port, starttls, outdir):
    exe = shutil.which("testssl") or shutil.which("testssl.sh")
    assert exe, "testssl.sh is not installed (Debian package testssl.sh; make deps)"
    path = os.path.join(outdir, "testssl-%d.json" % port)
    cmd = [exe, "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none",
           "--ip", "127.0.0.1", "--openssl-timeout", "10", "-U", "--jsonfile", path]
    if starttls:
        cmd += ["-t", "smtp"]
    cmd.append("127.0.0.1:%d" % port)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=outdir, start_new_session=True)
    return proc, path


def findings(proc, path):
    out = proc.communicate(timeout=300)[0].decode(errors="replace")
    assert os.path.exists(path), "testssl.sh wrote no JSON (rc %d):\n%s" % (proc.returncode, out)
    with open(path) as f:
        return json.load(f), out


def assert_nothing_vulnerable(results, out, what):
    by_id = {r["id"]: r for r in results}
    missing = [i for i in VULN_IDS if i not in by_id]
    assert not missing, "%s: testssl.sh did not report %s:\n%s" % (what, missing, out)
    bad = [r for r in results if r["severity"] not in ACCEPTABLE]
    assert not bad, "%s: %s\n%s" % (what, bad, out)
    # LOW is fine for informational findings, but "potentially VULNERABLE"
    # (LUCKY13 on CBC suites) is not.
    vuln = [r for r in results if r["id"] in VULN_IDS
            and re.search(r"vulnerable", r["finding"], re.I)
            and not re.match(r"\s*not vulnerable", r["finding"], re.I)]
    assert not vuln, "%s: %s" % (what, vuln)
    assert re.match(r"not vulnerable", by_id["LUCKY13"]["finding"]), by_id["LUCKY13"]


def test_testssl_finds_nothing_vulnerable_on_submission_and_smtps(services, workdir):
    # both scans at once: each mostly waits on its openssl children
    runs = [(run_testssl(services.sub_port, True, workdir), "submission"),
            (run_testssl(services.smtps_port, False, workdir), "smtps")]
    try:
        for (proc, path), what in runs:
            results, out = findings(proc, path)
            assert_nothing_vulnerable(results, out, what)
    finally:
        for (proc, _), _ in runs:
            if proc.poll() is None:  # its openssl children too
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
