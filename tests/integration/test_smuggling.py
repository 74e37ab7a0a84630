"""SMTP smuggling (CVE-2023-51764 family): a non-standard end-of-data
sequence inside a message must neither end the message at postino nor be
relayed so that the next hop sees an extra message."""
import socket
import time
import uuid

import pytest

SEQUENCES = ["\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r", "\n.\r"]
SMUGGLED = "MAIL FROM:<evil@x>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n"


def _replies(sock, buf):
    """Read until at least one complete final reply line is buffered."""
    while b"\r\n" not in buf or not _final(buf):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def _final(buf):
    lines = buf.split(b"\r\n")
    return any(len(ln) >= 4 and ln[3:4] == b" " for ln in lines)


def _converse(port, seq, msgid):
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    out = []

    def cmd(line):
        if line is not None:
            s.sendall(line.encode())
        out.append(_replies(s, b"").decode(errors="replace"))
        return out[-1]

    try:
        assert cmd(None).startswith("220")
        assert cmd("EHLO client.test\r\n").startswith("250")
        assert cmd("MAIL FROM:<s@sender.test>\r\n").startswith("250")
        assert cmd("RCPT TO:<victim@example.test>\r\n").startswith("250")
        assert cmd("DATA\r\n").startswith("354")
        body = ("From: <s@sender.test>\r\nTo: <victim@example.test>\r\n"
                "Subject: smuggling %r\r\nMessage-ID: %s\r\n\r\nbefore" % (seq, msgid))
        s.sendall((body + seq + SMUGGLED).encode())
        time.sleep(0.3)
        s.sendall(b"QUIT\r\n")
        s.settimeout(5)
        rest = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                rest += chunk
        except socket.timeout:
            pass
        out.append(rest.decode(errors="replace"))
    finally:
        s.close()
    return out


def test_no_smuggling(postino, sink):
    ids = {}
    for seq in SEQUENCES:
        msgid = "<%s@smuggle.test>" % uuid.uuid4().hex
        ids[msgid] = seq
        transcript = _converse(postino.port, seq, msgid)
        after = transcript[-1]
        # One DATA, at most one 250 for a message (or a rejection), never two.
        assert after.count("queued as") <= 1, (seq, transcript)
    # Every message must reach the sink exactly once, as one message.
    sink.wait_for(lambda m: "victim@example.test" in m.rcpts, count=len(SEQUENCES), timeout=30)
    time.sleep(3)
    msgs = sink.received(lambda m: "victim@example.test" in m.rcpts)
    assert not [m for m in sink.received() if m.mail_from.lower() == "evil@x"], \
        "a smuggled message was delivered"
    got = {}
    for m in msgs:
        got.setdefault(m.msg.get("Message-ID"), []).append(m)
    for msgid, seq in ids.items():
        assert len(got.get(msgid, [])) == 1, "sequence %r: %d messages at the sink" % (
            seq, len(got.get(msgid, [])))
    assert len(msgs) == len(SEQUENCES)
