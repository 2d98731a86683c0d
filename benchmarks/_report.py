"""The save step the implicit-feedback benchmarks share: stamp a result document with the
time and the command line, then write it as JSON and its markdown rendering (``out`` and
``out`` with the suffix ``.json``).

Readings written by hand survive a rerun: whatever follows the line :data:`READINGS` in
the existing ``out`` is appended, unchanged, to the new rendering."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

#: the marker line above the hand-written part of a result file (kept on rerun).
READINGS = "<!-- readings: written by hand, kept when the script rewrites this file -->"


def kept_readings(out: Path) -> str:
    """The marker and everything after it in ``out`` ("" when there is no such part)."""
    if not out.exists():
        return ""
    text = out.read_text()
    at = text.find(READINGS)
    return "" if at < 0 else text[at:]


def save_report(doc: dict, out: Path, render, script: str, argv=None, **fields) -> None:
    """``doc`` gains ``generated``, ``command`` (``python benchmarks/<script> <args>``)
    and ``fields``; ``render(doc)`` is the markdown, followed by the readings kept from the
    previous ``out`` (:func:`kept_readings`)."""
    args = argv if argv is not None else sys.argv[1:]
    doc.update(generated=time.strftime("%Y-%m-%d %H:%M:%S"),
               command=f"python benchmarks/{script} " + " ".join(args), **fields)
    kept = kept_readings(out)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float))
    md = render(doc)
    out.write_text(md if not kept else md.rstrip("\n") + "\n\n" + kept)


def markdown_table(rows: list, cols: list) -> list:
    """The lines of a markdown table of ``rows`` (dicts) over the columns ``cols``."""
    return (["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])
