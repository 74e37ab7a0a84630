"""Never an open relay: Nmap's smtp-open-relay script (the tool admins and
blocklist operators point at mail servers) tries its whole battery of relay
tricks — percent hack, bang paths, source routes, quoted local parts,
[ip] literals — against a client outside mynetworks and must find none."""
import shutil
import subprocess

import pytest

NMAP = shutil.which("nmap")


@pytest.mark.skipif(NMAP is None, reason="nmap is not installed (make deps installs it)")
def test_nmap_finds_no_open_relay(postino_factory, sink):
    # 127.0.0.1 is a stranger here: only 10/8 may relay. (-sV: the script
    # only runs on a port nmap has recognised as SMTP.)
    p = postino_factory(main={"mynetworks": "10.0.0.0/8",
                              "relayhost": "[127.0.0.1]:%d" % sink.port})
    out = subprocess.run(
        [NMAP, "-Pn", "-n", "-sV", "--version-light", "-p", str(p.port), "--script", "smtp-open-relay",
         # The script's default domain (nmap.scanme.org) is a foreign one:
         # relaying there is what must fail. (Naming our own domain would
         # only test that we accept our own mail.)
         "--script-args", "smtp-open-relay.ip=127.0.0.1",
         "127.0.0.1"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "smtp-open-relay" in out.stdout, out.stdout
    assert "doesn't seem to be an open relay" in out.stdout, out.stdout
    assert "is an open relay" not in out.stdout.replace("doesn't seem to be an open relay", "")
    # Nothing it tried reached the outside world.
    assert not sink.messages, [m.rcpt_tos for m in sink.messages]
    # Every attempt was refused and logged.
    assert p.log_lines(r"NOQUEUE: reject: RCPT from")
