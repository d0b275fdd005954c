"""Soak: a service that reloads re-exported bundles stays flat in memory, and many threads opening,
registering and closing connections to one database file never crash and always agree.

Each runs in a fresh process: RSS is measured without pytest's own allocations, and a crash (the
rc 139 that closing a registering connection used to cause) fails the test instead of pytest.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.paths import REPO

# 50 cycles of: re-export the bundle in place (write_bundle with a new manifest, as training does),
# register it again on the service's long-lived connection and on a fresh one, query, close the
# fresh one. Prints RSS after the warm-up cycles and at the end (MiB), and the live Routers.
RELOAD = """
import gc, re, shutil, sys
from pathlib import Path
import duckdb, routerdb
from routerdb.bundle import Bundle, write_bundle
from routerdb.router import Router

source, target, cycles = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
NAMES = ("model.onnx", "tokenizer.json", "models.parquet")

def reexport(note):
    manifest = {k: v for k, v in Bundle.load(source).manifest.items()
                if k not in ("format", "format_version", "files", "manifest_sha256")}
    def files(tmp):
        for name in NAMES:
            shutil.copy(source / name, tmp / name)
        return {name: name for name in NAMES}
    write_bundle(target, {**manifest, "note": note}, files)

def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+) kB", open("/proc/self/status").read())[1]) / 1024

service = duckdb.connect()
prompts = [f"prompt {i}: write about topic {i}" for i in range(64)]
service.execute("CREATE TABLE logs AS SELECT unnest(?) AS prompt", [prompts])
for cycle in range(cycles):
    reexport(f"cycle {cycle}")
    routerdb.register(service, target)
    fresh = duckdb.connect()
    routerdb.register(fresh, target)
    fresh.execute("SELECT route_best('x')").fetchall()
    fresh.close()
    n = service.execute("SELECT count(route_score(prompt, model)) FROM logs CROSS JOIN router_models")
    assert n.fetchall()[0][0] == 64 * 3
    gc.collect()
    if cycle == 4:
        warm = rss()
live = sum(isinstance(o, Router) for o in gc.get_objects())
print(warm, rss(), live)
"""


@pytest.mark.timeout(120)
def test_fifty_reloads_keep_memory_flat(tiny_bundle, tmp_path):
    done = subprocess.run([sys.executable, "-c", RELOAD, str(tiny_bundle), str(tmp_path / "bundle"), "50"],
                          cwd=REPO, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    warm, end, live = done.stdout.split()[-3:]
    assert float(end) - float(warm) < 50, f"RSS grew from {warm} to {end} MiB over 45 reloads"
    assert int(live) <= 2, f"{live} Routers alive after 50 reloads: old bundles are not released"


# 8 threads, each keeping up to 4 connections to one database file: open, register, query through
# a random connection, close a random one; scores compared with one-prompt-at-a-time scores.
CONNECTIONS = """
import random, sys, threading
import duckdb, numpy as np, routerdb
from routerdb.router import Router

bundle, path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
prompts = [f"prompt {i}: " + "word " * (i % 13) for i in range(24)]
router = Router(bundle, cache_size=0)
models = sorted(router.models)
want = {(p, m): float(router.score([p], [m])[0, 0]) for p in prompts for m in models}
errors, queries = [], []

def work(seed):
    rng, open_ = random.Random(seed), []
    try:
        for _ in range(rounds):
            while len(open_) < 4:
                con = duckdb.connect(path)
                routerdb.register(con, bundle)
                open_.append(con)
            con = rng.choice(open_)
            picked = rng.sample(prompts, 6)
            rows = con.execute("SELECT p.prompt, m.model, route_score(p.prompt, m.model) FROM (SELECT "
                               "unnest(?) AS prompt) p CROSS JOIN router_models m", [picked]).fetchall()
            assert len(rows) == 6 * len(models)
            for prompt, model, score in rows:
                assert abs(score - want[prompt, model]) <= 1e-5, (prompt, model, score)
            queries.append(1)
            open_.pop(rng.randrange(len(open_))).close()
        for con in open_:
            con.close()
    except Exception as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(queries), len(errors), errors[:3])
"""


@pytest.mark.timeout(120)
def test_threads_open_and_close_connections_to_one_file_at_random(tiny_bundle, tmp_path):
    done = subprocess.run([sys.executable, "-c", CONNECTIONS, str(tiny_bundle), str(tmp_path / "db.duckdb"),
                           "12"], cwd=REPO, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    queries, errors = done.stdout.split()[:2]
    assert (queries, errors) == ("96", "0"), done.stdout


# A connection that never registered, on a database whose registering connection closed and whose
# bundle was re-exported and loaded again elsewhere: a clear error, then register() fixes it.
RELEASED = """
import gc, shutil, sys
from pathlib import Path
import duckdb, routerdb
from routerdb.bundle import Bundle, write_bundle

source, target, db = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
shutil.copytree(source, target)
first, plain = duckdb.connect(db), duckdb.connect(db)
routerdb.register(first, target)
manifest = {k: v for k, v in Bundle.load(target).manifest.items()
            if k not in ("format", "format_version", "files", "manifest_sha256")}
def files(tmp):
    for name in ("model.onnx", "tokenizer.json", "models.parquet"):
        shutil.copy(source / name, tmp / name)
    return {name: name for name in ("model.onnx", "tokenizer.json", "models.parquet")}
write_bundle(target, {**manifest, "note": "retrained"}, files)
routerdb.register(duckdb.connect(), target)  # the service loads the new bundle elsewhere
first.close(); del first; gc.collect()       # nothing holds the old bundle's Router any more
try:
    plain.execute("SELECT route_best('hi')").fetchall()
except duckdb.Error as exc:
    print(str(exc).splitlines()[0])
routerdb.register(plain, target)
print("after register:", plain.execute("SELECT route_best('hi')").fetchall()[0][0])
"""


def test_a_released_bundle_is_a_clear_error_then_register_fixes_it(tiny_bundle, tmp_path):
    args = [str(tiny_bundle), str(tmp_path / "bundle"), str(tmp_path / "db.duckdb")]
    done = subprocess.run([sys.executable, "-c", RELEASED, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=110)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    error, fixed = done.stdout.strip().splitlines()
    assert "RouterReleasedError: the routing functions of bundle" in error
    assert "were released" in error and "Call routerdb.register(con, bundle) on this connection" in error
    assert fixed.split()[-1] in ("chat", "coder", "weak")
