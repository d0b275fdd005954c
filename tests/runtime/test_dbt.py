"""The routerdb.dbt plugin: examples/dbt/ built twice by dbt itself, the second run scoring only new rows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from routerdb.dbt import Plugin
from routerdb.router import shared_router
from tests.paths import REPO

PROJECT = REPO / "examples" / "dbt"
NEW_ROWS = [(9, "2026-12-01 09:11:00", "Write a SQL query for the median order total."),
            (10, "2026-12-01 09:12:30", "Name the largest planet of the solar system."),
            (11, "2026-12-01 09:13:10", "Write a Python function that merges two sorted lists.")]  # a repeat


def dbt_build(project: Path, cwd: Path, bundle: Path, database: Path) -> str:
    """`dbt build` from another directory; returns the invocation id."""
    env = {**os.environ, "ROUTERDB_BUNDLE": str(bundle), "ROUTERDB_DBT_DATABASE": str(database),
           "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "PYTHONPATH": str(REPO)}
    dbt = Path(sys.executable).with_name("dbt")  # the console script of this environment's dbt-core
    done = subprocess.run([str(dbt), "build", "--project-dir", str(project), "--profiles-dir", str(project)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "PASS=7 WARN=0 ERROR=0" in done.stdout, done.stdout[-4000:]  # 1 seed, 1 model, 5 data tests
    return json.loads((project / "target" / "run_results.json").read_text())["metadata"]["invocation_id"]


def routed(database: Path) -> list[tuple]:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return con.execute("SELECT id, prompt, route_best, route_scores, scored_by FROM routed_prompts "
                           "ORDER BY id").fetchall()
    finally:
        con.close()


def test_dbt_build_twice_scores_only_new_rows(tiny_bundle, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    elsewhere = tmp_path / "elsewhere"  # dbt runs from any directory: paths come from the flags and env
    elsewhere.mkdir()
    database = tmp_path / "warehouse.duckdb"

    first = dbt_build(project, elsewhere, tiny_bundle, database)
    rows = routed(database)
    assert [r[0] for r in rows] == list(range(1, 9)) and {r[4] for r in rows} == {first}
    router = shared_router(tiny_bundle)
    prompts = [r[1] for r in rows]
    assert [r[2] for r in rows] == router.best(prompts)
    scores = router.score(prompts)
    for row, want in zip(rows, scores, strict=True):
        assert dict(row[3]) == pytest.approx(dict(zip(router.models, want.tolist(), strict=True)), abs=1e-6)

    with (project / "seeds" / "prompt_log.csv").open("a") as seed:  # new traffic lands in the log
        seed.writelines(f"{i},{at},{prompt}\n" for i, at, prompt in NEW_ROWS)
    second = dbt_build(project, elsewhere, tiny_bundle, database)
    after = routed(database)
    assert second != first
    assert [r[0] for r in after] == list(range(1, 12))
    assert after[:8] == rows  # the first run's rows untouched
    touched = [r for r in after if r[4] == second]
    assert [r[0] for r in touched] == [9, 10, 11]  # only the new rows were scored
    assert [r[2] for r in touched] == router.best([p for _, _, p in NEW_ROWS])


def test_the_profile_takes_the_bundle_from_the_environment():
    profile = (PROJECT / "profiles.yml").read_text()
    assert "module: routerdb.dbt" in profile
    assert "bundle: \"{{ env_var('ROUTERDB_BUNDLE'" in profile


@pytest.mark.parametrize(("config", "message"), [
    ({}, r"no 'bundle'; allowed keys: \['bundle', 'prefix', 'table'\] with 'bundle' required"),
    ({"bundle": "b", "bundel": "c"}, r"unknown key\(s\) \['bundel'\]; allowed keys"),
])
def test_bad_plugin_config_says_what_is_allowed(config, message):
    with pytest.raises(ValueError, match=message):
        Plugin("routerdb.dbt", config)


def test_the_plugin_registers_on_a_connection_and_its_cursors(tiny_bundle, tmp_path):
    plugin = Plugin("dbt", {"bundle": str(tiny_bundle), "prefix": "r_"})
    con = duckdb.connect(str(tmp_path / "db.duckdb"))
    plugin.configure_connection(con)
    cursor = con.cursor()
    plugin.configure_cursor(cursor)
    models = [m for (m,) in cursor.execute("SELECT model FROM r_router_models ORDER BY model").fetchall()]
    assert models == sorted(shared_router(tiny_bundle).models)
    best = cursor.execute("SELECT r_route_best('Solve 3x + 5 = 20.')").fetchall()[0][0]
    assert best == shared_router(tiny_bundle).best(["Solve 3x + 5 = 20."])[0]
    con.close()
