"""docs/benchmarks.md and the marked tables of the other pages are rendered from benchmarks/results/*.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import render_docs  # noqa: E402
import results  # noqa: E402

REQUIRED = {"name", "task", "command", "environment", "notes", "tables", "results"}


def test_the_committed_page_is_the_rendering_of_the_result_files():
    committed = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert committed == render_docs.render(render_docs.load_results()), (
        "docs/benchmarks.md and benchmarks/results/ disagree: run python benchmarks/render_docs.py")


def test_the_marked_tables_of_the_topic_pages_are_the_rendering_of_the_result_files():
    pages = render_docs.topic_pages(render_docs.load_results(), ROOT / "docs")
    assert pages, "no page marks a table"
    for path, (committed, rendered) in pages.items():
        assert committed == rendered, f"{path.name}: run python benchmarks/render_docs.py"


def test_a_marked_table_is_filled_from_its_result_and_text_around_it_is_kept(tmp_path):
    records = [_record(tmp_path, "one", "fidelity", [["funcml", 29.14, 1], ["bicubic", 28.38, 2]])]
    text = "Intro.\n<!-- table: one 0 -->\nstale rows\n<!-- end table -->\nAfter.\n"
    out = render_docs.fill_tables(text, records)
    assert out.startswith("Intro.\n<!-- table: one 0 -->\n*one table*\n") and out.endswith("<!-- end table -->\nAfter.\n")
    assert "| funcml | 29.14 | 1 |\n| bicubic | 28.38 | 2 |" in out and "stale rows" not in out
    assert "What the rows are." in out and "`benchmarks/results/one.json`" in out
    assert render_docs.fill_tables(out, records) == out


@pytest.mark.parametrize("mark, message", [("one 1", "has 1 table"), ("two 0", "no result")])
def test_a_mark_naming_a_missing_result_or_table_is_refused(tmp_path, mark, message):
    records = [_record(tmp_path, "one", "fidelity", [["funcml", 1.0, 2]])]
    with pytest.raises(SystemExit, match=message):
        render_docs.fill_tables(f"<!-- table: {mark} -->\n<!-- end table -->\n", records, "page.md")


def test_check_mode_reports_a_stale_topic_page(tmp_path, monkeypatch, capsys):
    (tmp_path / "results").mkdir()
    _record(tmp_path / "results", "one", "fidelity", [["funcml", 1.0, 2]])
    monkeypatch.setattr(render_docs, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(render_docs, "PAGE", tmp_path / "benchmarks.md")
    assert render_docs.main([]) == 0
    topic = tmp_path / "topic.md"
    topic.write_text("<!-- table: one 0 -->\n| old |\n<!-- end table -->\n")
    assert render_docs.main(["--check"]) == 1 and "topic.md" in capsys.readouterr().err
    assert render_docs.main([]) == 0 and render_docs.main(["--check"]) == 0
    assert "| funcml | 1 | 2 |" in topic.read_text()


def test_every_result_file_is_complete_and_named_after_itself():
    records = {p: json.loads(p.read_text(encoding="utf-8")) for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    assert records
    for path, record in records.items():
        assert REQUIRED <= set(record), (path.name, REQUIRED - set(record))
        assert record["name"] == path.stem and record["task"] and record["command"].strip()
        for tab in record["tables"]:
            assert tab["title"] and all(len(row) == len(tab["columns"]) for row in tab["rows"]), (path.name, tab["title"])


def _record(tmp_path, name, task, rows, **kwargs):
    tab = results.table(f"{name} table", ["method", "PSNR dB", "seconds"], rows, caption="What the rows are.")
    path = results.write_result(name, {"rows": rows}, task=task, tables=[tab], argv=["bench_x.py", "--fast"],
                                directory=tmp_path, **kwargs)
    return json.loads(path.read_text())


def test_tasks_come_in_the_known_order_then_alphabetically_and_results_by_order_then_name(tmp_path):
    records = [_record(tmp_path, "z-fid", "fidelity", [["funcml", 29.14, 1]]),
               _record(tmp_path, "b-new", "zebra-task", [["x", 1.0, 2]]),
               _record(tmp_path, "a-new", "alpha/task", [["x", 1.0, 2]]),
               _record(tmp_path, "q2", "query", [["bicubic", 28.38, 0.001]]),
               _record(tmp_path, "q1", "query", [["funcml", 25.66, 1234.5678]], order=1),
               _record(tmp_path, "perf", "performance", [["funcml", None, 3e-7]], notes="other jobs ran")]
    page = render_docs.render(records)
    heads = [line for line in page.splitlines() if line.startswith("## ")]
    assert heads == ["## Reconstruction quality", "## Speed and memory against the official code",
                     "## Querying fields: super-resolution, imputation, segmentation", "## Alpha, task",
                     "## Zebra task"]
    assert page.index("### q1 table") < page.index("### q2 table")
    assert "| funcml | 29.14 | 1 |" in page and "| funcml | 25.66 | 1234.6 |" in page
    assert "| funcml |  | 3.0e-07 |" in page and "| bicubic | 28.38 | 0.001 |" in page
    assert "other jobs ran" in page and "Result file: `benchmarks/results/perf.json`." in page
    assert "```\npython bench_x.py --fast\n```" in page and "What the rows are." in page


def test_a_report_shows_the_commands_of_the_runs_it_gathers_before_its_own(tmp_path):
    runs = ["python bench_x.py run --data a", "python bench_x.py run --data b"]
    record = _record(tmp_path, "gathered", "fidelity", [["funcml", 1.0, 2]], inputs=runs)
    assert record["command"] == "\n".join([*runs, "python bench_x.py --fast"])
    assert "```\npython bench_x.py run --data a\npython bench_x.py run --data b\npython bench_x.py --fast\n```" \
        in render_docs.render([record])


def test_the_machine_line_names_cpu_threads_gpu_and_versions():
    line = render_docs.machine({"cpu": "Some CPU", "logical_cores": 16, "torch_threads": 1, "gpu": "NVIDIA H200",
                                "cuda": "12.8", "torch": "2.11.0", "python": "3.11.7", "funcml": "0.1.0"})
    assert line == ("Some CPU, 16 logical cores, 1 torch thread, GPU NVIDIA H200 (CUDA 12.8); "
                    "torch 2.11.0, python 3.11.7, funcml 0.1.0")


def test_check_mode_reports_a_stale_page(tmp_path, monkeypatch, capsys):
    (tmp_path / "results").mkdir()
    _record(tmp_path / "results", "one", "fidelity", [["funcml", 1.0, 2]])
    monkeypatch.setattr(render_docs, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(render_docs, "PAGE", tmp_path / "page.md")
    (tmp_path / "page.md").write_text("old\n")
    assert render_docs.main(["--check"]) == 1 and "stale" in capsys.readouterr().err
    assert render_docs.main([]) == 0 and render_docs.main(["--check"]) == 0


@pytest.mark.parametrize("bad", [[["only one cell"]], [["a", 1, 2, 3]]])
def test_a_table_with_rows_of_the_wrong_width_is_refused(bad):
    with pytest.raises(ValueError, match="do not have 3 cells"):
        results.table("t", ["a", "b", "c"], bad)
