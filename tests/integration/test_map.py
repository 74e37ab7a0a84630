"""postino map build / map query: text tables to Berkeley DB, like postmap."""
import os


def test_map_build_and_query(postino_factory):
    p = postino_factory(start=False)
    src = os.path.join(p.dir, "access")
    with open(src, "w") as f:
        f.write("# comment\nExample.COM   REJECT no thanks\n\n10.1.2.3 OK\n")
    r = p.cli("map", "build", src)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(src + ".db")
    r = p.cli("map", "query", src, "example.com")
    assert r.returncode == 0 and r.stdout.strip() == "REJECT no thanks", (r.stdout, r.stderr)
    r = p.cli("map", "query", src, "EXAMPLE.com")  # keys are case-insensitive
    assert r.returncode == 0 and r.stdout.strip() == "REJECT no thanks"
    r = p.cli("map", "query", src, "other.example")
    assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stdout)


def test_map_build_names_the_bad_line(postino_factory):
    p = postino_factory(start=False)
    src = os.path.join(p.dir, "bad")
    with open(src, "w") as f:
        f.write("good value\nlonely\n")
    r = p.cli("map", "build", src)
    assert r.returncode != 0
    assert "line 2" in r.stderr and src in r.stderr, r.stderr
    assert not os.path.exists(src + ".db")
