"""The shared save step of the benchmarks (benchmarks/_report.py): a rerun rewrites the
generated part of a result file and keeps the hand-written reading below the marker."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _report import READINGS, kept_readings, save_report  # noqa: E402


def _render(doc):
    return f"# table\n\nvalue {doc['value']}\n"


def test_rerun_keeps_the_reading_and_replaces_the_table(tmp_path):
    out = tmp_path / "r.md"
    save_report({"value": 1}, out, _render, "bench_x.py", ["--a", "1"], seed=3)
    assert out.read_text() == "# table\n\nvalue 1\n"
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["command"] == "python benchmarks/bench_x.py --a 1" and doc["seed"] == 3
    assert kept_readings(out) == ""
    out.write_text(out.read_text() + "\n" + READINGS + "\n\n**Reading.** my note\n")
    save_report({"value": 2}, out, _render, "bench_x.py", [])
    text = out.read_text()
    assert "value 2" in text and "value 1" not in text
    assert text.endswith(READINGS + "\n\n**Reading.** my note\n")
    assert text.count(READINGS) == 1
    save_report({"value": 3}, out, _render, "bench_x.py", [])   # idempotent on the reading
    assert out.read_text().count("my note") == 1


def test_no_file_no_reading(tmp_path):
    assert kept_readings(tmp_path / "absent.md") == ""
