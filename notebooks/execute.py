#!/usr/bin/env python
"""Execute the notebooks and save them **with their outputs** (what GitHub shows).

    python notebooks/execute.py                      # all notebooks, full settings
    python notebooks/execute.py notebooks/01_quickstart.ipynb
    python notebooks/execute.py --fast --no-write    # the tests' quick settings, a dry run

Run it after editing a notebook or changing what it shows, and commit the result:
``tests/test_notebooks.py`` fails when a committed notebook's outputs are stale (a code
cell edited since it was executed, outputs missing, a different kind of output than a
fresh run gives, or the text of a cell tagged ``deterministic`` changed) or when a
notebook is too large (:data:`MAX_BYTES`).

Full settings take about 20 minutes on 2 CPU cores (notebook 02 fits SVI for the
method comparison). Each notebook runs in a fresh ``python3`` kernel of this interpreter
on the CPU, in a scratch folder, with the inline matplotlib backend (PNG figures; the
notebooks set a small ``figure.dpi``); ``stderr`` output is not kept. Each code cell's
metadata records the SHA-256 of the source it was run with
(``metadata.bayesmf.source_sha256``) and the notebook's metadata the settings
(``metadata.bayesmf.settings``: ``"full"`` or ``"fast"``); run timestamps are not kept, so
re-running changes only what the code printed or drew.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: a committed notebook must stay below this size (bytes)
MAX_BYTES = 1_000_000
#: and so must each image in it (bytes of base64 text)
MAX_IMAGE_BYTES = 200_000


def source_hash(source: str) -> str:
    """SHA-256 (hex) of a cell's source, the stamp compared by the tests."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def kernel_env(fast: bool, jax_cache: str | None = None) -> dict:
    """Environment of the kernel: the settings switch, the inline backend (non-interactive,
    keeps figures as outputs), JAX on the CPU and this environment's kernelspec first."""
    env = {"BAYESMF_NB_FAST": "1" if fast else "0",
           "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "JAX_PLATFORMS": "cpu",
           "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter"),
           "PYTHONHASHSEED": "0"}
    if jax_cache:
        env["JAX_COMPILATION_CACHE_DIR"] = jax_cache
    return env


def execute(path: Path, workdir: Path, *, timeout: int = 1800):
    """Run ``path`` top to bottom (in ``workdir``) in the current environment variables;
    returns the executed notebook (raises on a failing cell)."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     record_timing=False,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def stamp(nb, fast: bool):
    """Record what the outputs were made from; drop run-specific metadata and ``stderr``
    output (library warnings and progress bars, with this machine's paths in them)."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("collapsed", None)
        if cell.cell_type == "code":
            cell.metadata["bayesmf"] = {"source_sha256": source_hash(cell.source)}
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream"
                                    and o.get("name") == "stderr")]
    nb.metadata.pop("widgets", None)
    nb.metadata["bayesmf"] = {"settings": "fast" if fast else "full"}
    return nb


def image_sizes(nb) -> list[int]:
    return [len(out["data"]["image/png"]) for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]


def main(argv=None) -> int:
    import nbformat
    from nbclient.exceptions import CellExecutionError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path,
                    help="notebooks (default: every notebooks/*.ipynb)")
    ap.add_argument("--fast", action="store_true",
                    help="the tests' quick settings (BAYESMF_NB_FAST=1); not for committing")
    ap.add_argument("--no-write", action="store_true", help="run only, keep the files")
    a = ap.parse_args(argv)
    paths = a.paths or sorted(HERE.glob("*.ipynb"))
    os.environ.update(kernel_env(a.fast, os.environ.get("JAX_COMPILATION_CACHE_DIR")))
    print(f"executing {len(paths)} notebook(s) with {'fast' if a.fast else 'full'} "
          f"settings (full: about 20 minutes on 2 CPU cores)", flush=True)
    status = 0
    for path in paths:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                nb = stamp(execute(path, Path(tmp)), a.fast)
            except CellExecutionError as exc:
                print(f"{path.name}: FAILED, not written: {exc.ename}: {exc.evalue}",
                      flush=True)
                status = 1
                continue
        text = nbformat.writes(nb) + "\n"
        imgs = image_sizes(nb)
        note = (f"{path.name}: {time.perf_counter() - t0:.0f} s, {len(text) / 1e3:.0f} kB, "
                f"{len(imgs)} image(s), largest {max(imgs, default=0) / 1e3:.0f} kB")
        if len(text) > MAX_BYTES or max(imgs, default=0) > MAX_IMAGE_BYTES:
            note += f"  TOO LARGE (limits {MAX_BYTES / 1e3:.0f} kB per notebook, " \
                    f"{MAX_IMAGE_BYTES / 1e3:.0f} kB per image)"
            status = 1
        if not a.no_write:
            path.write_text(text, encoding="utf-8")
            note += f" -> wrote {path}"
        print(note, flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
