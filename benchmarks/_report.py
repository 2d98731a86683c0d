"""The save step the implicit-feedback benchmarks share: stamp a result document with the
time and the command line, then write it as JSON and its markdown rendering (``out`` and
``out`` with the suffix ``.json``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def save_report(doc: dict, out: Path, render, script: str, argv=None, **fields) -> None:
    """``doc`` gains ``generated``, ``command`` (``python benchmarks/<script> <args>``)
    and ``fields``; ``render(doc)`` is the markdown."""
    args = argv if argv is not None else sys.argv[1:]
    doc.update(generated=time.strftime("%Y-%m-%d %H:%M:%S"),
               command=f"python benchmarks/{script} " + " ".join(args), **fields)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float))
    out.write_text(render(doc))
