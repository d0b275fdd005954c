from __future__ import annotations

import pytest

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


def test_sql_query_or_file_is_explicit(tiny_bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # SQL that mentions a .sql file is SQL (it was read as a file name)
    assert main(["sql", str(tiny_bundle), "SELECT 41 + 1 AS answer -- see notes.sql"]) == 0
    assert "42" in capsys.readouterr().out
    (tmp_path / "q.txt").write_text("SELECT 'from the file' AS source;")
    assert main(["sql", str(tiny_bundle), "q.txt"]) == 0  # an existing file is read (it was parsed as SQL)
    assert "from the file" in capsys.readouterr().out
    assert main(["sql", str(tiny_bundle), "-f", "q.txt"]) == 0 and "from the file" in capsys.readouterr().out
    assert main(["sql", str(tiny_bundle), "-c", "SELECT 7 AS seven"]) == 0 and "7" in capsys.readouterr().out
    assert main(["sql", str(tiny_bundle), "missing.sql"]) == 2
    assert "'missing.sql' is no file here and reads as a file name" in capsys.readouterr().err
    assert main(["sql", str(tiny_bundle), "-f", "q.txt", "-c", "SELECT 1"]) == 2
    assert "got 2 scripts; allowed: exactly one of -f FILE, -c SQL, --recipe NAME or QUERY" in (
        capsys.readouterr().err)


def test_set_values_are_text_unless_typed(tiny_bundle, capsys):
    query = "SELECT getvariable('v') AS v, typeof(getvariable('v')) AS t"
    assert main(["sql", str(tiny_bundle), "-c", query, "--set", "v=007"]) == 0
    out = capsys.readouterr().out
    assert "007" in out and "VARCHAR" in out  # it became the integer 7
    assert main(["sql", str(tiny_bundle), "-c", query, "--set", "v:int=007"]) == 0
    out = capsys.readouterr().out
    assert "│     7 │ INTEGER" in out
    assert main(["sql", str(tiny_bundle), "-c", query, "--set", "v:float=0.25", "--set", "w:bool=true"]) == 0
    assert "0.25" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["sql", str(tiny_bundle), "-c", query, "--set", "v:int=seven"])
    assert "'seven' is not a valid int" in capsys.readouterr().err


def test_model_lists_are_parsed_alike_everywhere(tiny_bundle, capsys):
    assert main(["score", str(tiny_bundle), "Write a SQL query", "--models", "chat, coder"]) == 0
    out = capsys.readouterr().out
    assert "best " in out and "chat" in out and "weak" not in out
    assert main(["score", str(tiny_bundle), "hi", "--models", "chat,,coder"]) == 2
    assert "an empty name between commas" in capsys.readouterr().err


LOCK_HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE logs AS SELECT 'hi' AS prompt")
print("ready", flush=True)
time.sleep(60)
"""


def test_table_on_a_locked_database_says_who_holds_it(tiny_bundle, tmp_path, capsys):
    import subprocess
    import sys

    db = tmp_path / "busy.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        rc = main(["rescore", str(tiny_bundle), str(db), str(tmp_path / "o.parquet"), "--table", "logs",
                   "--no-progress"])
        err = capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert rc == 2, err
    assert "busy.duckdb' is locked by another process" in err and f"PID {holder.pid}" in err, err
    assert "--table is only for DuckDB database files" not in err


def test_a_model_list_names_each_llm_once_and_is_never_empty(tiny_bundle, tmp_path, capsys):
    assert main(["score", str(tiny_bundle), "hi", "--models", "chat, chat"]) == 2
    assert "'chat' named more than once; allowed: each LLM once" in capsys.readouterr().err
    assert main(["score", str(tiny_bundle), "hi", "--models", ""]) == 2  # it meant every LLM, silently
    assert "error: --models '': an empty name; allowed: LLM names" in capsys.readouterr().err
    logs = tmp_path / "logs.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["hi", "there"]}), logs)
    out = tmp_path / "o.parquet"
    assert main(["rescore", str(tiny_bundle), str(logs), str(out), "--models", "chat, chat"]) == 2
    assert "named more than once" in capsys.readouterr().err and not out.exists()  # a MAP DuckDB refuses


def test_ctrl_c_during_rescore_is_one_line_saying_how_to_resume(tiny_bundle, tmp_path, capsys, monkeypatch):
    import routerdb.cli as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_job", interrupted)
    assert main(["rescore", str(tiny_bundle), "in.parquet", str(tmp_path / "o.parquet")]) == 130
    err = capsys.readouterr().err
    assert err == "interrupted. Run the same command again to resume from its last complete part.\n"
