from __future__ import annotations

from routerdb.cli import main
from tests.paths import REPO


def test_info(tiny_bundle, capsys):
    assert main(["info", str(tiny_bundle)]) == 0
    out = capsys.readouterr().out
    assert "LLMs        3 (embedding dim 32): chat, coder, weak" in out
    assert "lora fine-tuning" in out and "verified max |ONNX - torch|" in out
    assert "head_tail truncation" in out  # what a long prompt keeps, from the manifest


def test_score(tiny_bundle, capsys):
    assert main(["score", str(tiny_bundle), "Write a SQL query", "--models", "chat,coder"]) == 0
    out = capsys.readouterr().out
    assert "'Write a SQL query': best " in out and "weak" not in out


def test_sql_runs_the_demo_file(tiny_bundle, capsys):
    # The demo query works on any bundle: it scores its prompts against every LLM in the table.
    assert main(["sql", str(tiny_bundle), str(REPO / "sql" / "demo.sql")]) == 0
    out = capsys.readouterr().out
    assert out.count("<- best") == 4 and "coder" in out


def test_errors_are_messages_not_tracebacks(tmp_path, tiny_bundle, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "has no manifest.json" in capsys.readouterr().err
    assert main(["sql", str(tiny_bundle), "SELECT route_score('x', 'nope')"]) == 2
    assert "unknown LLM 'nope'" in capsys.readouterr().err
