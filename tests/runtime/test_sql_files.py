"""Every shipped recipe (sql/*.sql, shipped as routerdb/sql/): headed by what it does, runnable as
shipped from any directory, its parameters checked, and right on known inputs.

Each file runs the way `routerdb sql BUNDLE --recipe NAME --set name=value` runs it. Its numbers are checked
against the Python definitions (training.evaluation.metrics) on the tiny bundle's own LLMs.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from routerdb.cli import main, parse_variable, statements
from routerdb.duckdb import register
from routerdb.recipes import RECIPES
from routerdb.router import shared_router
from tests import tiny_models
from tests.paths import REPO
from training.evaluation.metrics import apgr, cost_quality_curve, routing_curve

SQL = REPO / "sql"
FILES = sorted(SQL.glob("*.sql"))


def run_file(bundle, name: str, **variables) -> tuple[list[str], list[tuple]]:
    con = duckdb.connect()
    register(con, bundle)
    for key, value in variables.items():
        if isinstance(value, pa.Table):
            con.register(f"{key}_source", value)
            con.execute(f"CREATE TABLE {key}_input AS SELECT * FROM {key}_source")
            value = f"{key}_input"
        con.execute(f"SET VARIABLE {key} = ?", [value])
    result = None
    for statement in statements((SQL / name).read_text()):
        result = con.sql(statement)
    return result.columns, result.fetchall()


@pytest.fixture(scope="module")
def scores() -> pa.Table:
    """Per-model quality for the tiny bundle's LLMs (coder, chat, weak), with a cost per call."""
    table = tiny_models.synthetic_scores(n_prompts=40, seed=3)
    cost = {"coder": 0.004, "chat": 0.001, "weak": 0.0002}
    return table.append_column("cost", pa.array([cost[m] for m in table["model"].to_pylist()]))


@pytest.fixture(scope="module")
def sample_file(scores, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sql") / "sample.parquet"
    pq.write_table(scores, path)
    return path


def matrix(scores: pa.Table, column: str, models: list[str]) -> tuple[list[str], np.ndarray]:
    rows = scores.to_pylist()
    prompts = sorted({r["prompt"] for r in rows})
    at = {(r["prompt"], r["model"]): r[column] for r in rows}
    return prompts, np.array([[at[p, m] for m in models] for p in prompts], dtype=np.float64)


def test_every_file_says_what_it_does_first():
    assert {f.name for f in FILES} >= {"demo.sql", "cost_routing.sql", "strong_share_threshold.sql",
                                       "cost_quality_curve.sql", "routing_curve_apgr.sql",
                                       "route_functions.sql"}
    for path in FILES:
        first = path.read_text().splitlines()[0]
        assert first.startswith(f"-- {path.name}: "), f"{path.name} must open with '-- NAME: what it does'"


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_every_file_runs_as_shipped_through_the_cli(tiny_bundle, sample_file, path, capsys):
    """The demo defaults, pointed at a sample whose LLMs are the bundle's."""
    assert main(["sql", str(tiny_bundle), str(path), "--set", f"sample_path={sample_file}"]) == 0
    out = capsys.readouterr().out
    assert "┌" in out and "NULL │ NULL" not in out  # a result table, with values


def test_routing_curve_and_apgr_match_the_python_definitions(tiny_bundle, scores):
    prompts, quality = matrix(scores, "score", ["chat", "weak"])
    pairs = pa.table({"prompt": prompts, "strong_score": quality[:, 0], "weak_score": quality[:, 1]})
    cols, rows = run_file(tiny_bundle, "routing_curve_apgr.sql", pairs_table=pairs, strong_model="chat",
                          weak_model="weak")
    got = [dict(zip(cols, r, strict=True)) for r in rows]
    router_scores = shared_router(tiny_bundle).score(prompts, ["chat", "weak"]).astype(np.float64)
    diff = router_scores[:, 0] - router_scores[:, 1]
    pct, curve = routing_curve(quality[:, 0], quality[:, 1], diff, n_points=11)
    assert len(got) == 11 and {r["prompts"] for r in got} == {len(prompts)}
    np.testing.assert_allclose([r["strong_call_pct"] for r in got], pct, atol=1e-9)
    np.testing.assert_allclose([r["quality"] for r in got], curve, atol=1e-9)
    strong, weak = quality[:, 0], quality[:, 1]
    np.testing.assert_allclose(got[0]["apgr"], apgr(strong, weak, diff, n_points=11), atol=1e-9)
    np.testing.assert_allclose(got[0]["apgr_exact"], apgr(strong, weak, diff), atol=1e-9)


def test_apgr_of_a_perfect_and_a_constant_router(tiny_bundle):
    """Hand-made cases: APGR does not depend on which router made the diff when diff is constant."""
    prompts = [f"{tiny_models.CORPUS[i % 10]} #{i}" for i in range(10)]
    strong = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=float)
    pairs = pa.table({"prompt": prompts, "strong_score": strong, "weak_score": np.zeros(10)})
    _, rows = run_file(tiny_bundle, "routing_curve_apgr.sql", pairs_table=pairs, strong_model="chat",
                       weak_model="chat")  # diff = 0 for every prompt: a constant router
    assert rows[0][-3] == pytest.approx(0.5) and rows[0][-2] == pytest.approx(0.5)


def test_cost_quality_curve_matches_the_python_definition(tiny_bundle, scores):
    models = ["chat", "coder", "weak"]  # model-name order: ties go to the first name in both
    prompts, quality = matrix(scores, "score", models)
    _, cost = matrix(scores, "cost", models)
    router_scores = shared_router(tiny_bundle).score(prompts, models).astype(np.float64)
    cols, rows = run_file(tiny_bundle, "cost_quality_curve.sql", scores_table=scores)
    got = [dict(zip(cols, r, strict=True)) for r in rows]
    router = [r for r in got if r["kind"] == "router"]
    want = cost_quality_curve(quality, cost, router_scores, [r["cost_weight"] for r in router])
    assert len(router) == 21 and router[0]["cost_weight"] == 0 and router[-1]["cost_weight"] == 2
    np.testing.assert_allclose([r["mean_cost_usd"] for r in router], want.cost, atol=1e-12)
    np.testing.assert_allclose([r["mean_quality"] for r in router], want.quality, atol=1e-12)
    llm = {r["model"]: r for r in got if r["kind"] == "llm"}
    np.testing.assert_allclose([llm[m]["mean_quality"] for m in models], want.model_quality)
    np.testing.assert_allclose([llm[m]["mean_cost_usd"] for m in models], want.model_cost)
    oracle = next(r for r in got if r["kind"] == "oracle")
    assert oracle["mean_quality"] == pytest.approx(want.oracle_quality)
    assert oracle["mean_cost_usd"] == pytest.approx(want.oracle_cost)


def prices(weak: float = 0.1) -> pa.Table:
    return pa.table({"model": ["chat", "coder", "weak"], "usd_per_1m_input_tokens": [1.0, 10.0, weak],
                     "usd_per_1m_output_tokens": [2.0, 30.0, 2 * weak]})


def cost_routing_expected(bundle, prompts: list[str], weight: float,
                          table: pa.Table | None = None) -> tuple[list[str], np.ndarray]:
    models = ["chat", "coder", "weak"]
    table = prices() if table is None else table
    tokens = np.ceil(np.array([len(p) for p in prompts]) / 4)[:, None]
    cost = (tokens * np.array(table["usd_per_1m_input_tokens"]) + 300 * np.array(
        table["usd_per_1m_output_tokens"])) / 1e6
    utility = shared_router(bundle).score(prompts, models) - weight * cost / cost.max()
    picks = utility.argmax(axis=1)
    return [models[j] for j in picks], cost[np.arange(len(prompts)), picks]


def test_cost_routing_with_a_weight(tiny_bundle, scores):
    prompts = sorted(set(scores["prompt"].to_pylist()))
    for weight in (0.0, 0.02, 0.5):
        cols, rows = run_file(tiny_bundle, "cost_routing.sql", prompts_table=pa.table({"prompt": prompts}),
                              prices_table=prices(), cost_weight=weight)
        got = [dict(zip(cols, r, strict=True)) for r in rows]
        models, cost = cost_routing_expected(tiny_bundle, prompts, weight)
        assert [r["prompt"] for r in got] == prompts
        assert [r["routed_to"] for r in got] == models
        np.testing.assert_allclose([r["cost_usd"] for r in got], cost)
        assert {r["cost_weight"] for r in got} == {weight}


def test_cost_routing_within_a_budget(tiny_bundle, scores):
    prompts = sorted(set(scores["prompt"].to_pylist()))
    grid = [0.05 * i for i in range(41)]
    means = [cost_routing_expected(tiny_bundle, prompts, w)[1].mean() for w in grid]
    budget = (max(means) + min(means)) / 2
    cols, rows = run_file(tiny_bundle, "cost_routing.sql", prompts_table=pa.table({"prompt": prompts}),
                          prices_table=prices(), budget_usd=budget)
    got = [dict(zip(cols, r, strict=True)) for r in rows]
    weight = next(w for w, m in zip(grid, means, strict=True) if m <= budget)  # the smallest that fits
    assert got[0]["cost_weight"] == pytest.approx(weight)
    assert [r["routed_to"] for r in got] == cost_routing_expected(tiny_bundle, prompts, weight)[0]
    assert all(r["within_budget"] for r in got) and got[0]["mean_cost_usd"] <= budget
    _, rows = run_file(tiny_bundle, "cost_routing.sql", prompts_table=pa.table({"prompt": prompts}),
                       prices_table=prices(), budget_usd=1e-12)  # unreachable: the cheapest LLM, said so
    assert {r[1] for r in rows} == {"weak"} and not rows[0][-1]


def test_cost_routing_budget_that_needs_a_large_cost_weight(tiny_bundle, scores):
    """Scores differ little and prices a lot: the budget is met only past cost_weight 2 (where the grid
    used to end and fall through to 'cheapest LLM')."""
    prompts = sorted(set(scores["prompt"].to_pylist()))
    table = prices(weak=0.8)  # the cheap LLM costs nearly what the good one does: small cost differences
    grid = [0.05 * i for i in range(41)] + [2 * 1.25 ** k for k in range(1, 41)]
    means = [cost_routing_expected(tiny_bundle, prompts, w, table)[1].mean() for w in grid]
    beyond = next(i for i in range(41, len(grid)) if means[i] < means[40] and means[i] > min(means))
    budget = means[beyond] * (1 + 1e-9)  # just above: DuckDB's AVG may sum in another order than numpy
    assert means[beyond - 1] > budget
    cols, rows = run_file(tiny_bundle, "cost_routing.sql", prompts_table=pa.table({"prompt": prompts}),
                          prices_table=table, budget_usd=budget)
    got = [dict(zip(cols, r, strict=True)) for r in rows]
    weight = next(w for w, m in zip(grid, means, strict=True) if m <= budget)
    assert 2 < got[0]["cost_weight"] < 1e9 and got[0]["cost_weight"] == pytest.approx(weight)
    assert len({r["routed_to"] for r in got}) > 1 and all(r["within_budget"] for r in got)


def test_strong_share_threshold(tiny_bundle, scores):
    prompts = sorted(set(scores["prompt"].to_pylist()))
    cols, rows = run_file(tiny_bundle, "strong_share_threshold.sql",
                          prompts_table=pa.table({"prompt": prompts}), strong_model="chat",
                          weak_model="weak", strong_share=0.25)
    got = [dict(zip(cols, r, strict=True)) for r in rows]
    s = shared_router(tiny_bundle).score(prompts, ["chat", "weak"]).astype(np.float64)
    diff = s[:, 0] - s[:, 1]
    asked = got[0]
    assert asked["requested"] and asked["strong_share"] == 0.25
    assert asked["threshold"] == pytest.approx(np.quantile(diff, 0.75))
    assert asked["achieved_share"] == pytest.approx(np.mean(diff > np.quantile(diff, 0.75)))
    grid = got[1:]
    assert [r["strong_share"] for r in grid] == pytest.approx([i / 10 for i in range(11)])
    assert grid[0]["achieved_share"] == 0 and grid[-1]["achieved_share"] == 1
    for r in grid[1:-1]:
        assert r["threshold"] == pytest.approx(np.quantile(diff, 1 - r["strong_share"]))
        assert r["achieved_share"] == pytest.approx(np.mean(diff > r["threshold"]))
    distinct = len(np.unique(diff)) == len(diff)  # without ties every share is met to one prompt
    assert not distinct or all(abs(r["achieved_share"] - r["strong_share"]) <= 1 / len(prompts) + 1e-9
                               for r in grid)


def test_strong_share_threshold_defaults_pick_the_extreme_llms(tiny_bundle, scores):
    prompts = sorted(set(scores["prompt"].to_pylist()))
    _, rows = run_file(tiny_bundle, "strong_share_threshold.sql", prompts_table=pa.table({"prompt": prompts}))
    means = dict(zip(shared_router(tiny_bundle).models,
                     shared_router(tiny_bundle).score(prompts).mean(axis=0), strict=True))
    assert rows[0][0] == max(means, key=means.get) and rows[0][1] == min(means, key=means.get)
    assert rows[0][2] == 0.2  # the default share


def test_route_functions(tiny_bundle):
    cols, rows = run_file(tiny_bundle, "route_functions.sql", candidates="weak,coder")
    router = shared_router(tiny_bundle)
    prompts = [r[0] for r in rows]
    scores = router.score(prompts)
    for (prompt, best, best_score, best_candidate, score_map), row in zip(rows, scores, strict=True):
        assert best == router.models[int(row.argmax())]
        assert best_score == pytest.approx(float(row.max()), abs=1e-6)
        assert best_candidate == router.best([prompt], ["weak", "coder"])[0]
        np.testing.assert_allclose([score_map[m] for m in router.models], row, atol=1e-6)
    _, rows = run_file(tiny_bundle, "route_functions.sql")  # default candidates: the first two names
    assert {r[3] for r in rows} <= set(sorted(router.models)[:2])


# ------------------------------------------------------------------ every header example, run and checked

# The header's placeholders, for the tiny bundle: its LLMs, and the tables a `--database` example names.
PLACEHOLDERS = {"big-llm": "chat", "small-llm": "weak", "llm-a": "weak", "llm-b": "coder"}


def header_examples(path: Path) -> list[list[str]]:
    """The `routerdb ...` command lines under '-- Run:' in a file's header, `[a | b]` options expanded."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("-- Run:"):
            inside = True
        elif not line.startswith("--  "):
            inside = False
        if inside:
            lines.append(line.removeprefix("-- Run:").removeprefix("--").strip())
    commands = " ".join(lines).replace("\\ ", "").split("routerdb ")[1:]
    out = []
    for command in commands:
        head, _, rest = command.partition("[")
        options, _, tail = rest.partition("]")
        variants = [[]] + [o.split() for o in options.split("|")] if options else [[]]  # [a | b]: none, a, b
        out += [head.split() + variant + tail.split() for variant in variants]
    return out


def example_database(path: Path, file: str, scores: pa.Table) -> None:
    """The tables the file's `--database my.duckdb` example reads, from the tiny sample."""
    prompts = pa.table({"prompt": sorted(set(scores["prompt"].to_pylist()))})
    quality, strong_weak = matrix(scores, "score", ["chat", "weak"])
    tables = {"my_prompts": prompts, "traffic_sample": prompts, "my_prices": prices(),
              "evals": scores if file == "cost_quality_curve.sql" else pa.table(
                  {"prompt": quality, "strong_score": strong_weak[:, 0], "weak_score": strong_weak[:, 1]})}
    con = duckdb.connect(str(path))
    for name, table in tables.items():
        con.register("source", table)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM source")
        con.unregister("source")
    con.close()


def _placeholders(arg: str) -> str:
    name, sep, value = arg.partition("=")
    return name + sep + ",".join(PLACEHOLDERS.get(v, v) for v in value.split(",")) if sep else arg


def run_example(argv: list[str], bundle: Path, sample: Path, tmp: Path, scores: pa.Table, capsys):
    """Run the example through the CLI, then again on a connection to read its answer."""
    argv = [str(bundle) if a in ("BUNDLE", "build/demo/bundle")
            else str(tmp / "my.duckdb") if a == "my.duckdb" else a for a in argv]
    argv = [_placeholders(a) for a in argv]
    assert argv[2] == "--recipe", argv
    file = f"{argv[3]}.sql"
    if "--database" in argv:
        example_database(tmp / "my.duckdb", file, scores)
    argv += ["--set", f"sample_path={sample}"]  # the demo default, pointed at the tiny bundle's LLMs
    assert main(argv) == 0, capsys.readouterr().err
    assert "┌" in capsys.readouterr().out
    sets = [parse_variable(argv[i + 1]) for i, a in enumerate(argv) if a == "--set"]
    database = argv[argv.index("--database") + 1] if "--database" in argv else ":memory:"
    con = duckdb.connect(database)
    register(con, bundle)
    for name, value in sets:
        con.execute(f"SET VARIABLE {name} = ?", [value])
    result = None
    for statement in statements((SQL / file).read_text()):
        result = con.sql(statement)
    rows = [dict(zip(result.columns, r, strict=True)) for r in result.fetchall()]
    if file == "strong_share_threshold.sql":  # the calibration gaps, for the tie allowance
        diffs = [d for (d,) in con.sql("SELECT diff FROM calibration_diff").fetchall()]
        rows = [{**r, "calibration_diffs": diffs} for r in rows]
    con.close()
    return file, dict(sets), rows


def check_answer(file: str, sets: dict, rows: list[dict], bundle: Path) -> None:
    """What each example must answer: the values it asked for, used, and a routing that means something."""
    models = set(shared_router(bundle).models)
    if file == "cost_routing.sql":
        assert rows and {r["routed_to"] for r in rows} <= models
        if "budget_usd" in sets:  # the budget is met by a trade-off, not by falling back to the cheapest
            assert rows[0]["cost_weight"] < 1e9 and all(r["within_budget"] for r in rows)
            assert rows[0]["mean_cost_usd"] <= float(sets["budget_usd"])
        else:
            assert rows[0]["cost_weight"] == float(sets.get("cost_weight", 0.5))
    elif file == "strong_share_threshold.sql":
        asked = rows[0]
        assert asked["requested"] and asked["strong_share"] == float(sets.get("strong_share", 0.2))
        # met to one prompt, or to the tied prompts at the threshold (equal gaps go one way together)
        diffs = np.asarray(asked["calibration_diffs"])
        tied = max(1, int(np.max(np.unique(diffs, return_counts=True)[1])))
        assert len(diffs) == asked["calibration_prompts"]
        assert abs(asked["achieved_share"] - asked["strong_share"]) <= tied / len(diffs) + 1e-9
        assert asked["strong_model"] == sets.get("strong_model", asked["strong_model"])
        assert asked["strong_model"] in models
    elif file == "cost_quality_curve.sql":
        kinds = [r["kind"] for r in rows]
        assert kinds.count("router") == 21 and kinds.count("oracle") == 1
        assert kinds.count("llm") == len(models)
    elif file == "routing_curve_apgr.sql":
        assert len(rows) == 11
        assert rows[0]["strong_model"] == sets.get("strong_model", rows[0]["strong_model"])
        assert np.isfinite(rows[0]["apgr"]) and rows[0]["prompts"] > 1
    elif file == "route_functions.sql":
        candidates = sets.get("candidates", "").split(",") if "candidates" in sets else sorted(models)[:2]
        assert len(rows) == 3 and {r["best_candidate"] for r in rows} <= set(candidates)
    elif file == "demo.sql":
        assert len(rows) == 4 * len(models) and sum(r["best"] == "<- best" for r in rows) == 4
    else:
        raise AssertionError(f"{file}: no check for its header examples; add one here")


EXAMPLES = [(f, argv) for f in FILES for argv in header_examples(f)]


def test_every_file_has_header_examples():
    assert {f.name for f, _ in EXAMPLES} == {f.name for f in FILES}
    assert len(EXAMPLES) == 13


@pytest.mark.parametrize(("path", "argv"), EXAMPLES, ids=[" ".join(a[3:]) for _, a in EXAMPLES])
def test_every_header_example_gives_a_meaningful_answer(tiny_bundle, sample_file, scores, tmp_path, capsys,
                                                        path, argv):
    file, sets, rows = run_example(argv, tiny_bundle, sample_file, tmp_path, scores, capsys)
    check_answer(file, sets, rows, tiny_bundle)


# ------------------------------------------------------------------ anywhere, with the user's own tables

USER_TABLES = {
    "cost_routing": ["--set", "prompts_table=my_prompts", "--set", "prices_table=my_prices"],
    "strong_share_threshold": ["--set", "prompts_table=traffic_sample", "--set", "strong_model=chat",
                               "--set", "weak_model=weak"],
    "cost_quality_curve": ["--set", "scores_table=evals"],
    "routing_curve_apgr": ["--set", "pairs_table=evals", "--set", "strong_model=chat",
                           "--set", "weak_model=weak"],
}


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Another directory, with no demo sample anywhere: an installed package away from the checkout."""
    import routerdb.cli as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "SAMPLE", tmp_path / "no-sample.parquet")
    return tmp_path


@pytest.mark.parametrize("name", sorted(USER_TABLES))
def test_a_recipe_runs_from_any_directory_on_the_users_tables(tiny_bundle, scores, elsewhere, capsys, name):
    example_database(elsewhere / "my.duckdb", f"{name}.sql", scores)
    argv = ["sql", str(tiny_bundle), "--recipe", name, "--database", "my.duckdb", *USER_TABLES[name]]
    assert main(argv) == 0, capsys.readouterr().err  # it read data/sample/... relative to the directory
    assert "┌" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(USER_TABLES))
def test_a_recipe_without_its_table_or_the_sample_says_which_to_set(tiny_bundle, elsewhere, capsys, name):
    table = USER_TABLES[name][1].partition("=")[0]
    assert main(["sql", str(tiny_bundle), "--recipe", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {table} is not set and the demo sample " in err
    assert f"fix: --set {table}=YOUR_TABLE" in err


def test_recipes_ship_as_package_data():
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-data"]["routerdb"] == ["sql/*.sql"]
    shipped = sorted(p.name for p in RECIPES.iterdir() if p.name.endswith(".sql"))
    assert shipped == [f.name for f in FILES] and len(FILES) == 6  # routerdb/sql is sql/


def test_an_unknown_recipe_lists_the_shipped_ones(tiny_bundle, capsys):
    assert main(["sql", str(tiny_bundle), "--recipe", "cost_routnig"]) == 2
    assert ("error: --recipe 'cost_routnig' is not a shipped recipe; allowed: cost_quality_curve, "
            "cost_routing, demo, route_functions, routing_curve_apgr, strong_share_threshold.") in (
        capsys.readouterr().err)


@pytest.mark.parametrize(("name", "sets", "message"), [
    ("strong_share_threshold", ["strong_model=gpt-9"],
     "strong_model = 'gpt-9' is not an LLM of the bundle; allowed: chat, coder, weak; fix: --set "
     "strong_model="),
    ("strong_share_threshold", ["weak_model=Chat"], "weak_model = 'Chat' is not an LLM of the bundle"),
    ("strong_share_threshold", ["strong_share=-0.5"],
     "strong_share = -0.5: allowed a share from 0 to 1 (0.2: 20 % to the strong LLM); fix: --set "
     "strong_share="),
    ("strong_share_threshold", ["strong_share=1.5"], "strong_share = 1.5: allowed a share from 0 to 1"),
    ("cost_routing", ["cost_weight=nan"],
     "cost_weight = nan: allowed a number >= 0; fix: --set cost_weight="),
    ("cost_routing", ["cost_weight=-1"], "cost_weight = -1: allowed a number >= 0"),
    ("cost_routing", ["cost_weight:float=inf"], "cost_weight = inf: allowed a number >= 0"),
    ("cost_routing", ["budget_usd=nan"], "budget_usd = nan: allowed a number > 0 (USD per prompt)"),
    ("cost_routing", ["budget_usd=cheap"], "budget_usd = cheap: allowed a number > 0"),
    ("cost_routing", ["output_tokens=-5"], "output_tokens = -5: allowed a number of tokens >= 0"),
    ("cost_quality_curve", ["weight_step=0"], "weight_step = 0: allowed a number > 0"),
    ("cost_quality_curve", ["max_weight=nan"], "max_weight = nan: allowed a number >= 0"),
    ("routing_curve_apgr", ["strong_model=nobody"], "strong_model = 'nobody' is not an LLM of the bundle"),
])
def test_a_bad_parameter_is_a_one_line_error_naming_it(tiny_bundle, sample_file, capsys, name, sets, message):
    argv = ["sql", str(tiny_bundle), "--recipe", name, "--set", f"sample_path={sample_file}"]
    for pair in sets:
        argv += ["--set", pair]
    assert main(argv) == 2  # each ran: NULL threshold, every prompt to one LLM, within_budget true, ...
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_prices_for_none_of_the_bundles_llms_are_an_error(tiny_bundle, sample_file, tmp_path, capsys):
    con = duckdb.connect(str(tmp_path / "p.duckdb"))
    con.execute("CREATE TABLE prices AS SELECT 'gpt-9' AS model, 1.0 AS usd_per_1m_input_tokens, "
                "2.0 AS usd_per_1m_output_tokens")
    con.close()
    argv = ["sql", str(tiny_bundle), "--recipe", "cost_routing", "--database", str(tmp_path / "p.duckdb"),
            "--set", "prices_table=prices", "--set", f"sample_path={sample_file}"]
    assert main(argv) == 2
    assert "error: prices_table prices prices none of the bundle's LLMs (chat, coder, weak)" in (
        capsys.readouterr().err)


def test_duckdb_errors_reach_the_command_line_as_one_line(tiny_bundle, capsys):
    assert main(["sql", str(tiny_bundle), "-c", "SELECT * FROM no_such_table"]) == 2
    err = capsys.readouterr().err
    assert err == "error: Catalog Error: Table with name no_such_table does not exist!\n", err
