"""`routerdb report`: its numbers are the SQL recipes' on the same log, and headless Chromium renders it
with every plot loaded (the screenshot is kept as build/report/report.png)."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from routerdb.cli import main
from routerdb.duckdb import register
from routerdb.recipes import run_recipe
from routerdb.report import ReportError, report
from routerdb.router import shared_router
from tests import tiny_models
from tests.paths import REPO

ARTIFACTS = REPO / "build" / "report"  # CI keeps the screenshot
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def labelled_log(tmp_path_factory) -> Path:
    """Per-LLM quality and cost for the tiny bundle's LLMs, plus two rows without a prompt."""
    table = tiny_models.synthetic_scores(n_prompts=40, seed=3)
    cost = {"coder": 0.004, "chat": 0.001, "weak": 0.0002}
    table = table.append_column("cost", pa.array([cost[m] for m in table["model"].to_pylist()]))
    empty = pa.table({c: pa.nulls(2, table.schema.field(c).type) for c in table.column_names})
    path = tmp_path_factory.mktemp("report") / "log.parquet"
    pq.write_table(pa.concat_tables([table, empty]), path)
    return path


@pytest.fixture(scope="module")
def prices_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prices") / "prices.csv"
    path.write_text("model,usd_per_1m_input_tokens,usd_per_1m_output_tokens\n"
                    "coder,3.0,15.0\nchat,0.5,1.5\nweak,0.05,0.2\n")
    return path


def embedded(path: Path) -> dict:
    found = re.search(r'<script type="application/json" id="routerdb-report">(.*?)</script>',
                      path.read_text(), re.S)
    return json.loads(found.group(1).replace("<\\/", "</"))


def recipe_rows(bundle, name: str, relation: str | None = None, **variables) -> list[dict]:
    """A recipe run on its own, as `routerdb sql --set` runs it, on the log's distinct prompts."""
    con = duckdb.connect()
    register(con, bundle)
    for table, value in [(k, v) for k, v in variables.items() if isinstance(v, pa.Table)]:
        con.register(f"{table}_source", value)
        con.execute(f"CREATE TABLE {table}_input AS SELECT * FROM {table}_source")
        variables[table] = f"{table}_input"
    result = run_recipe(con, name, variables)
    result = con.sql(relation) if relation else result
    return [{k: None if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in zip(result.columns, row, strict=True)} for row in result.fetchall()]


def same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) and got
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key in w:
            assert g[key] == (pytest.approx(w[key], rel=1e-12) if isinstance(w[key], float) else w[key]), key


def test_report_numbers_are_the_recipes(tiny_bundle, labelled_log, prices_csv, tmp_path, sample_path):
    out = report(tiny_bundle, labelled_log, tmp_path / "r.html", prices=prices_csv, strong="coder",
                 weak="weak", strong_share=0.3, progress=False)
    data = embedded(out)
    log = pq.read_table(labelled_log)
    prompts = sorted({p for p in log["prompt"].to_pylist() if p is not None})
    assert data["log"] == {"path": str(labelled_log), "rows": log.num_rows, "distinct_prompts": len(prompts),
                           "null_prompts": 2, "labelled": True}
    assert data["bundle"]["digest"] == shared_router(tiny_bundle).bundle.digest
    router = shared_router(tiny_bundle)
    assert {r["llm"]: r["prompts"] for r in data["shares"]} == dict(Counter(router.best(prompts)))

    prices = pcsv.read_csv(prices_csv)
    common = {"sample_path": str(sample_path), "prompts_table": pa.table({"prompt": prompts}),
              "prices_table": prices}
    same_rows(data["tables"]["thresholds"], recipe_rows(
        tiny_bundle, "strong_share_threshold.sql", **common, strong_model="coder", weak_model="weak",
        strong_share=0.3))
    same_rows(data["tables"]["predicted_curve"], recipe_rows(
        tiny_bundle, "cost_routing.sql", "SELECT cost_weight, mean_cost_usd, mean_score FROM route_lambdas "
        "ORDER BY cost_weight", **common, budget_usd=1.0))
    labelled = log.filter(pc.is_valid(log["prompt"]))
    same_rows(data["tables"]["measured_curve"], recipe_rows(
        tiny_bundle, "cost_quality_curve.sql", **common, scores_table=labelled))
    asked = data["tables"]["thresholds"][0]
    assert asked["requested"] and (asked["strong_model"], asked["weak_model"]) == ("coder", "weak")
    # what the HTML shows is what the JSON says
    text = out.read_text()
    assert f"<td>{asked['threshold']:.6g}</td>" in text and html.escape(str(labelled_log)) in text


def test_report_of_a_log_without_quality_uses_the_demo_prices(tiny_bundle, tmp_path, capsys):
    path = tmp_path / "log.csv"
    path.write_text('id,text\n1,"Solve 4x - 3 = 9."\n2,"Write a limerick about cats."\n3,"Name a planet."\n')
    assert main(["report", str(tiny_bundle), str(path), "--out", str(tmp_path / "r.html"),
                 "--prompt-column", "text"]) == 0
    progress = capsys.readouterr().err  # the progress bar, on stderr
    assert "scoring: 100%" in progress and "3/3" in progress, progress
    data = embedded(tmp_path / "r.html")
    assert data["log"]["labelled"] is False and "measured_curve" not in data["tables"]
    assert data["prices"] == "" and "made-up demo prices" in (tmp_path / "r.html").read_text()
    assert sum(r["prompts"] for r in data["shares"]) == 3


@pytest.mark.parametrize(("args", "message"), [
    (["--prompt-column", "nope"], r"no column 'nope' in .*; its columns are \['prompt_id', 'prompt'"),
    (["--prompt-column", "score"], r"column 'score' of .* is double; allowed: text"),
    (["--strong", "gpt-9"], r"unknown LLM 'gpt-9'"),
    (["--strong-share", "1.5"], r"strong share 1.5; allowed: a number in \[0, 1\]"),
])
def test_report_errors_say_what_is_allowed(tiny_bundle, labelled_log, tmp_path, capsys, args, message):
    out = tmp_path / "r.html"
    assert main(["report", str(tiny_bundle), str(labelled_log), "--out", str(out), *args]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_report_refuses_bad_prices_and_outputs(tiny_bundle, labelled_log, tmp_path):
    bad = tmp_path / "prices.csv"
    bad.write_text("model,price\ncoder,1\n")
    with pytest.raises(ReportError, match=r"has columns \['model', 'price'\]; allowed: a CSV with"):
        report(tiny_bundle, labelled_log, tmp_path / "r.html", prices=bad, progress=False)
    bad.write_text("model,usd_per_1m_input_tokens,usd_per_1m_output_tokens\ngpt-9,1,1\n")
    with pytest.raises(ReportError, match=r"prices \['gpt-9'\], none of the bundle's LLMs"):
        report(tiny_bundle, labelled_log, tmp_path / "r.html", prices=bad, progress=False)
    with pytest.raises(ReportError, match=r"allowed: a file named .html"):
        report(tiny_bundle, labelled_log, tmp_path / "r.png", progress=False)


def test_report_without_matplotlib_says_how_to_install_it(tiny_bundle, labelled_log, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["report", str(tiny_bundle), str(labelled_log), "--out", str(tmp_path / "r.html")]) == 2
    assert 'Install the report extra: pip install "routerdb[report]"' in capsys.readouterr().err


# A copy of the report with a script that writes, once the page has loaded, each image's state into
# the DOM: the report itself runs no code.
PROBE = ("<script>window.addEventListener('load', () => { const s = document.createElement('pre'); "
         "s.id = 'probe'; s.textContent = JSON.stringify([...document.images].map(i => "
         "[i.complete, i.naturalWidth, i.naturalHeight])); document.body.appendChild(s); });</script>")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "headless Chromium is needed: apt-get install chromium (.ci/run installs it)"
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


def test_demo_report_renders_in_headless_chromium(demo_run, sample_path, tmp_path):
    """The demo bundle on the whole shipped sample (500 prompts x 9 LLMs, with measured quality)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = report(demo_run / "bundle", sample_path, ARTIFACTS / "report.html", progress=False)
    data = embedded(out)
    assert data["log"]["distinct_prompts"] == 500 and len(data["tables"]["measured_curve"]) == 21 + 9 + 1
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), profile=tmp_path / "p1")
    states = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout).group(1)))
    assert len(states) == 4  # shares, score distributions, cost-quality curves, threshold
    assert all(done and width > 300 and height > 150 for done, width, height in states), states

    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    chromium("--window-size=1200,4200", f"--screenshot={shot}", out.as_uri(), profile=tmp_path / "p2")
    from matplotlib.image import imread  # the report extra, installed with the tests

    pixels = imread(shot)[..., :3]  # [height, width, RGB] in [0, 1]
    ink = (pixels < 0.9).any(axis=-1)
    assert ink.mean() > 0.03, f"the screenshot is {100 * ink.mean():.2f} % ink: blank"
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # plots in colour, not text alone
