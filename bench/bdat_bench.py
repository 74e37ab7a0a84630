#!/usr/bin/python3
"""bdat_bench.py - is BDAT (RFC 3030) slower than DATA for postino's
delivery agent? The measurement behind smtp_chunking_enable's default.

    smtp-source  ->  postino A  ->  B  ->  smtp-sink

A relays everything to B - a second postino, or with --receiver postfix a
private Postfix instance (bench.py's) - whose smtpd offers CHUNKING and
PIPELINING; A
runs once with smtp_chunking_enable = yes (its delivery agent sends BDAT)
and once with = no (DATA), alternately, --rounds times for each message
size. B relays to smtp-sink (DATA: smtp-sink has no CHUNKING), which exits
after the last message, so the figure is end-to-end msg/s as in bench.py;
only the A -> B hop differs between the two runs. Both instances are
fresh for every run. B's "disconnect ... bdat=N" log lines confirm which
command carried the mail.

Run as root, like bench.py. Prints every run and the medians.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import signal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def make_postino(root, bindir, next_port, name, extra):
    """bench.Postino under root, named name, relaying to next_port."""
    os.makedirs(root)
    p = bench.Postino(root, bindir, next_port)
    p.name = name
    cf = os.path.join(p.conf, "main.cf")
    with open(cf) as f:
        text = f.read()
    # distinct names: each would take the other for itself (a mail loop)
    text = text.replace("myhostname = postino-bench.localdomain",
                        "myhostname = %s.localdomain" % name)
    text += "".join("%s = %s\n" % kv for kv in extra.items())
    with open(cf, "w") as f:
        f.write(text)
    return p


def cpu_seconds(pidfile, comm):
    """CPU time (user + system) of the children of the master in pidfile
    whose command name is comm."""
    try:
        with open(pidfile) as f:
            master = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0.0
    ticks = sum(u + st for ppid, name, (u, st), _ in bench.proc_table().values()
                if name == comm and ppid == master)
    return ticks / bench.TICK


def carried_by(log):
    """How B received the mail: commands counted in its disconnect lines."""
    n = {"bdat": 0, "data": 0}
    try:
        with open(log, errors="replace") as f:
            for line in f:
                if " disconnect from " not in line:
                    continue
                for word in line.split():
                    k, _, v = word.partition("=")
                    if k in n and v.isdigit():
                        n[k] += int(v)
    except OSError:
        pass
    return n


def run_one(args, size, messages, chunking):
    """Returns (end-to-end msg/s, B's command counts)."""
    root = tempfile.mkdtemp(prefix="postino-bdat-bench-")
    os.chmod(root, 0o755)  # the mail user must traverse it
    sink = bench.Sink(messages)
    a = b = None
    try:
        if args.receiver == "postfix":
            b = bench.Postfix(root, sink.port)
        else:
            b = make_postino(os.path.join(root, "b"), args.bin, sink.port, "hop-b", {})
        a = make_postino(os.path.join(root, "a"), args.bin, b.port, "hop-a",
                         {"smtp_chunking_enable": "yes" if chunking else "no"})
        b.start()
        a.start()
        m = argparse.Namespace(sessions=args.sessions, messages=messages, size=size,
                               timeout=args.timeout)
        _, t_e2e = bench.measure(a, sink, m)
        # the agents that did the hop, and B's smtpd at its other end
        cpu = (cpu_seconds(os.path.join(a.dir, "spool", "pid", "master.pid"), "delivery"),
               cpu_seconds(os.path.join(b.dir, "spool", "pid", "master.pid"), "smtpd"))
    except bench.BenchError:
        for p in (a, b):
            if p is not None:
                sys.stderr.write("--- last lines of %s ---\n%s" % (p.log, bench.tail(p.log)))
        print("bdat_bench: files kept in %s" % root)
        raise
    finally:
        for p in (a, b):
            if p is not None:
                p.stop()
        sink.kill()
    cmds = carried_by(b.log)  # B logs its disconnects when A stops
    if args.keep:
        print("bdat_bench: files kept in %s" % root)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return messages / t_e2e, cmds, [1e6 * c / messages for c in cpu]


def parse_args():
    ap = argparse.ArgumentParser(description="postino delivering with BDAT vs DATA")
    ap.add_argument("--bin", required=True, help="directory with postino's programs")
    ap.add_argument("--rounds", type=int, default=5, help="runs per size and command")
    ap.add_argument("--sizes", default="4096:20000,102400:3000",
                    help="SIZE:MESSAGES pairs, comma separated")
    ap.add_argument("--receiver", choices=["postino", "postfix"], default="postino",
                    help="what A delivers to")
    ap.add_argument("--sessions", type=int, default=20, help="parallel SMTP connections")
    ap.add_argument("--timeout", type=int, default=600, help="seconds allowed per run")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (logs)")
    return ap.parse_args()


def main():
    args = parse_args()
    args.bin = os.path.abspath(args.bin)
    for tool in (bench.SMTP_SOURCE, bench.SMTP_SINK, os.path.join(args.bin, "postino")):
        if not os.access(tool, os.X_OK):
            sys.exit("bdat_bench: %s is missing (run make deps and make all)" % tool)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    sizes = [tuple(int(x) for x in pair.split(":")) for pair in args.sizes.split(",")]
    results = {}
    try:
        for size, messages in sizes:
            for r in range(args.rounds):
                # alternate which goes first, so drift hits both alike
                for chunking in ((True, False) if r % 2 == 0 else (False, True)):
                    rate, cmds, cpu = run_one(args, size, messages, chunking)
                    key = (size, "BDAT" if chunking else "DATA")
                    results.setdefault(key, []).append((rate, cpu[0], cpu[1]))
                    print("size %6d  %s  round %d: %7.0f msg/s end-to-end, CPU per message: "
                          "A delivery %5.0f us, B smtpd %5.0f us  (B got bdat=%d data=%d)"
                          % (size, key[1], r + 1, rate, cpu[0], cpu[1], cmds["bdat"],
                             cmds["data"]), flush=True)
    except (bench.BenchError, KeyboardInterrupt) as e:
        sys.stderr.write("bdat_bench: FAILED: %s\n" % e)
        return 1
    print()
    print("machine: %s" % bench.machine())
    print("receiver B: %s" % args.receiver)
    print("%8s %9s %8s | %10s %10s %6s | %-17s | %-17s" % (
        "size", "messages", "", "msg/s", "", "ratio", "A delivery us/msg", "B smtpd us/msg"))
    for size, messages in sizes:
        med = {}
        for cmd in ("BDAT", "DATA"):
            rows = results[(size, cmd)]
            med[cmd] = [statistics.median(row[k] for row in rows) for k in range(3)]
        b, d = med["BDAT"], med["DATA"]
        print("%8d %9d %8s | %10.0f %10.0f %6.3f | %8.0f %8.0f | %8.0f %8.0f" % (
            size, messages, "BDAT/DATA", b[0], d[0], b[0] / d[0], b[1], d[1], b[2], d[2]))
    print("(medians of %d rounds; msg/s end to end, ratio > 1: BDAT faster; CPU time of "
          "A's delivery agents and of B's smtpd per message)" % args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
