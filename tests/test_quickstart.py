"""The README quick start is a script (examples/quickstart.py) that runs end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "quickstart.py"


def _readme_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start (Python)", 1)[1].split("\n## ", 1)[0]
    return section


def test_readme_quick_start_calls_the_script_and_the_script_makes_its_calls():
    section = _readme_block()
    assert "python examples/quickstart.py" in section
    code = section.split("```python", 1)[1].split("```", 1)[0]
    code = "\n".join(line.split("#", 1)[0] for line in code.splitlines())
    called = set(re.findall(r"\b([A-Za-z_]\w*)\(", code))
    script = SCRIPT.read_text(encoding="utf-8")
    missing = {name for name in called if not re.search(rf"\b{name}\(", script)}
    assert not missing, f"README quick start calls {sorted(missing)}, the script does not"


def test_quickstart_runs_and_says_what_it_does(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg",
               JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    out = tmp_path / "qs"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--fast", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    first = text.splitlines()[0]
    assert "about" in first and str(out / "model.nc") in first  # how long, where it writes
    steps = re.findall(r"^\[\s*[\d.]+ s\] (.+)$", text, flags=re.M)
    assert len(steps) == 10, steps
    assert "predictions identical to those draws in memory: True" in text
    assert re.search(r"done in \d+ s; the model is in ", text)
    assert (out / "model.nc").exists() and [p.name for p in out.iterdir()] == ["model.nc"]
    import bayesmf

    assert bayesmf.load(out / "model.nc").posterior_.n_samples == 40
