"""The notebooks are committed **executed** (outputs and figures, full settings) and the
tests fail when those outputs are stale or too large.

Static checks (no kernel, :func:`stale_reasons`): every code cell was executed, in order,
with the source it has now (the SHA-256 stamp ``notebooks/execute.py`` writes into
``metadata.bayesmf.source_sha256``), no cell shows an error, the notebook says it ran with
the full settings, and it stays under ``MAX_BYTES`` (each image under
``MAX_IMAGE_BYTES``).

Fresh runs: each notebook reads ``BAYESMF_NB_FAST=1`` (set here) and then uses a corner of
the packaged MovieLens latest-small and tiny sampler settings. It executes in a fresh
``python3`` kernel of the test interpreter (nbclient + ipykernel from the ``dev`` extra;
jupyter_client launches the native kernel with ``sys.executable``), with the inline
(Agg) matplotlib backend. Its outputs are compared with the committed ones
(:func:`compare`), a rule that holds across settings and runs:

* per code cell, the same **kinds** of output: ``stdout`` text, ``execute_result`` /
  ``display_data`` with the same MIME types (consecutive stream chunks merged; ``stderr``
  ignored, since warnings come and go with library versions) -- so a committed cell
  without its outputs, or with a table where a figure now comes, is stale;
* for cells tagged ``deterministic`` (reprs, labels, messages), the same **text**
  (``text/plain`` and ``stdout``) after replacing every number by ``#`` and collapsing
  whitespace.

A failure means: ``python notebooks/execute.py notebooks/<name>.ipynb``, then commit.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
EXPECTED = {"01_quickstart.ipynb", "02_diagnostics.ipynb",
            "03_uncertainty_recommendations.ipynb", "04_likelihoods.ipynb",
            "05_implicit_feedback.ipynb", "06_poisson_factors.ipynb"}
_spec = importlib.util.spec_from_file_location("nb_execute", NOTEBOOKS / "execute.py")
nbexec = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbexec)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\b(?:nan|NaN|inf|-inf)\b")


# ----------------------------------------------------------------------------- rules
def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def merged_outputs(cell):
    """The cell's outputs with consecutive chunks of one stream merged (how a stream is
    split depends on flush timing) and stderr dropped."""
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            if o.get("name") == "stderr":
                continue
            if out and out[-1].get("output_type") == "stream" \
                    and out[-1].get("name") == o.get("name"):
                out[-1] = {**out[-1], "text": out[-1]["text"] + o.get("text", "")}
                continue
        out.append(o)
    return out


def kinds(cell) -> list:
    return [("stream", o.get("name")) if o.get("output_type") == "stream"
            else (o.get("output_type"), tuple(sorted(o.get("data", {}))))
            for o in merged_outputs(cell)]


def normalised_text(cell) -> str:
    parts = []
    for o in merged_outputs(cell):
        parts.append(str(o.get("text", "")))
        parts.append(str(o.get("data", {}).get("text/plain", "")))
    return " ".join(_NUMBER.sub("#", "\n".join(parts)).split())


def stale_reasons(nb, name: str, size: int) -> list[str]:
    """What is wrong with a committed notebook, without running it."""
    why = []
    if nb.metadata.get("bayesmf", {}).get("settings") != "full":
        why.append("not executed with the full settings (metadata.bayesmf.settings)")
    if size > nbexec.MAX_BYTES:
        why.append(f"{size:,} bytes, over the {nbexec.MAX_BYTES:,}-byte limit")
    big = [s for s in nbexec.image_sizes(nb) if s > nbexec.MAX_IMAGE_BYTES]
    if big:
        why.append(f"{len(big)} image(s) over {nbexec.MAX_IMAGE_BYTES:,} bytes")
    for j, cell in enumerate(code_cells(nb), 1):
        stamp = cell.metadata.get("bayesmf", {}).get("source_sha256")
        if stamp != nbexec.source_hash(cell.source):
            why.append(f"code cell {j} was edited after it was executed" if stamp
                       else f"code cell {j} carries no execution stamp")
        if cell.get("execution_count") != j:
            why.append(f"code cell {j} has execution count {cell.get('execution_count')}, "
                       f"expected {j} (run top to bottom)")
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            why.append(f"code cell {j} shows an error")
    return [f"{name}: {w}" for w in why]


def compare(committed, fresh, name: str) -> list[str]:
    """Differences between committed outputs and a fresh run (see the module docs)."""
    a, b = code_cells(committed), code_cells(fresh)
    if len(a) != len(b):
        return [f"{name}: {len(a)} code cells committed, {len(b)} in the fresh run"]
    why = []
    for j, (ca, cb) in enumerate(zip(a, b), 1):
        if kinds(ca) != kinds(cb):
            why.append(f"{name}: code cell {j} committed outputs {kinds(ca)}, "
                       f"a fresh run gives {kinds(cb)}")
        elif "deterministic" in ca.metadata.get("tags", []) \
                and normalised_text(ca) != normalised_text(cb):
            why.append(f"{name}: code cell {j} (deterministic) committed text "
                       f"{normalised_text(ca)[:200]!r}, a fresh run gives "
                       f"{normalised_text(cb)[:200]!r}")
    return why


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory):
    """The notebooks' kernels compile into bayesmf's own persistent compilation cache, the
    folder the samplers of every other test use
    (:func:`bayesmf.infer.driver.enable_persistent_cache`: ``$BAYESMF_COMPILE_CACHE_DIR``
    or ``~/.cache/bayesmf/jax``):
    the notebooks fit the same small data with the same settings, so only the first one
    pays for compiling, and a machine that ran the suite before compiles none of it again.
    With that cache off, a folder shared by this run's workers."""
    import os

    from bayesmf.infer.driver import enable_persistent_cache

    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or enable_persistent_cache() or str(
        tmp_path_factory.getbasetemp().parent / "bayesmf-jax-cache")


def execute(path: Path, tmp_path: Path, monkeypatch, jax_cache):
    """A fresh run of ``path`` (fast settings) compared with its committed outputs."""
    for k, v in nbexec.kernel_env(fast=True, jax_cache=jax_cache).items():
        monkeypatch.setenv(k, v)
    nb = nbexec.execute(path, tmp_path, timeout=600)
    committed = nbformat.read(path, as_version=4)
    problems = compare(committed, nb, path.name)
    assert not problems, ("committed outputs are stale; run python notebooks/execute.py "
                          f"{path.relative_to(NOTEBOOKS.parent)}:\n" + "\n".join(problems))
    return nb


def outputs_of(nb, kind=None):
    for cell in nb.cells:
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                if kind is None or out.get("output_type") == kind:
                    yield cell, out


def _images(nb):
    return sum("image/png" in out.get("data", {}) for _, out in outputs_of(nb, "display_data"))


def _text(nb):
    parts = []
    for _, out in outputs_of(nb):
        parts.append(str(out.get("text", "")))
        parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- static
def test_all_notebooks_present():
    assert EXPECTED <= {p.name for p in ALL}


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_committed_with_current_outputs(path):
    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    problems = stale_reasons(nb, path.name, len(text.encode("utf-8")))
    assert not problems, ("run python notebooks/execute.py "
                          f"{path.relative_to(NOTEBOOKS.parent)} and commit it:\n"
                          + "\n".join(problems))
    assert _images(nb) >= 2, "the committed notebook shows its figures"
    assert any("deterministic" in c.metadata.get("tags", []) for c in code_cells(nb))


def _committed(name="01_quickstart.ipynb"):
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def test_the_rules_catch_stale_notebooks():
    """Each kind of staleness is reported (no kernel needed)."""
    nb = _committed()
    assert stale_reasons(nb, "nb", 1000) == [] and compare(nb, nb, "nb") == []
    edited = copy.deepcopy(nb)
    code_cells(edited)[2].source += "\nprint('new')"
    assert stale_reasons(edited, "nb", 1000) == ["nb: code cell 3 was edited after it was "
                                                 "executed"]
    assert "over the" in stale_reasons(nb, "nb", nbexec.MAX_BYTES + 1)[0]
    stripped = copy.deepcopy(nb)
    for c in code_cells(stripped):
        c.outputs, c.execution_count = [], None
    assert len(stale_reasons(stripped, "nb", 1000)) == len(code_cells(nb))
    assert len(compare(stripped, nb, "nb")) == sum(bool(kinds(c)) for c in code_cells(nb))
    det = next(j for j, c in enumerate(code_cells(nb))
               if "deterministic" in c.metadata.get("tags", []) and kinds(c) == [
                   ("stream", "stdout")])
    changed = copy.deepcopy(nb)
    out = merged_outputs(code_cells(changed)[det])[0]
    code_cells(changed)[det].outputs = [{**out, "text": out["text"] + "a new line\n"}]
    assert "(deterministic)" in compare(nb, changed, "nb")[0]
    renumbered = copy.deepcopy(changed)  # numbers alone never count
    cell = code_cells(renumbered)[det]
    cell.outputs = [{**cell.outputs[0], "text": re.sub(r"\d", "7", cell.outputs[0]["text"])}]
    assert compare(changed, renumbered, "nb") == []
    split = copy.deepcopy(changed)  # a stream split into chunks is the same output
    t = cell.outputs[0]["text"]
    code_cells(split)[det].outputs = [{**cell.outputs[0], "text": t[:5]},
                                      {**cell.outputs[0], "text": t[5:]},
                                      {"output_type": "stream", "name": "stderr",
                                       "text": "a warning\n"}]
    code_cells(renumbered)[det].outputs = [{**cell.outputs[0], "text": t}]
    assert compare(renumbered, split, "nb") == []


# ----------------------------------------------------------------------------- fresh runs
def test_01_quickstart(tmp_path, monkeypatch, jax_cache):
    nb = execute(NOTEBOOKS / "01_quickstart.ipynb", tmp_path, monkeypatch, jax_cache)
    assert _images(nb) >= 2
    text = _text(nb)
    assert "Gibbs" in text and "title" in text
    assert "summary.nc" in text and "largest change of a predicted mean" in text


def test_02_diagnostics(tmp_path, monkeypatch, jax_cache):
    nb = execute(NOTEBOOKS / "02_diagnostics.ipynb", tmp_path, monkeypatch, jax_cache)
    assert _images(nb) >= 5  # trace, rank, R-hat boxes, rootogram, LOO comparison
    text = _text(nb)
    assert "NonIdentifiableWarning" in text  # the raw-factor warning is shown
    assert "elpd" in text and "gibbs rank" in text


def test_03_uncertainty_recommendations(tmp_path, monkeypatch, jax_cache):
    nb = execute(NOTEBOOKS / "03_uncertainty_recommendations.ipynb", tmp_path, monkeypatch,
                 jax_cache)
    assert _images(nb) >= 4  # strategy scatter, Thompson shares, calibration, metric draws
    text = _text(nb)
    assert "upper (q=0.9)" in text and "thompson" in text


def test_04_likelihoods(tmp_path, monkeypatch, jax_cache):
    nb = execute(NOTEBOOKS / "04_likelihoods.ipynb", tmp_path, monkeypatch, jax_cache)
    assert _images(nb) >= 2  # categorical vs Gaussian predictive, reliability diagram
    text = _text(nb)
    assert "log-loss" in text and "AUC" in text and "cut-point gaps" in text
    assert "stars to a Bernoulli model" in text and "0/1" in text


def test_06_poisson_factors(tmp_path, monkeypatch, jax_cache):
    nb = execute(NOTEBOOKS / "06_poisson_factors.ipynb", tmp_path, monkeypatch, jax_cache)
    assert _images(nb) >= 2  # top items per factor, one user's factor shares
    text = _text(nb)
    assert "P(y>=1)" in text and "main factor" in text
    assert "held-out log p(y) per non-zero count" in text


@pytest.mark.slow  # ~45 s warm, over a minute cold (four samplers compiled); the fast suite
# still checks that its committed outputs are current (test_committed_with_current_outputs)
def test_05_implicit_feedback(tmp_path, monkeypatch, jax_cache):
    nb = execute(NOTEBOOKS / "05_implicit_feedback.ipynb", tmp_path, monkeypatch, jax_cache)
    assert _images(nb) >= 1
    text = _text(nb)
    assert "held-out pairs" in text and "per sweep" in text
    assert "uniform:4" in text and "recall@20" in text
