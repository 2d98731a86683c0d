"""The notebooks run top to bottom (small settings) and are committed without outputs.

Each notebook reads ``BAYESMF_NB_FAST=1`` (set here) and then uses a corner of the packaged
MovieLens latest-small and tiny sampler settings. It executes in a fresh ``python3``
kernel of the test interpreter (nbclient + ipykernel from the ``dev`` extra; jupyter_client
launches the native kernel with ``sys.executable``), with the Agg matplotlib backend.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
EXPECTED = {"01_quickstart.ipynb", "02_diagnostics.ipynb",
            "03_uncertainty_recommendations.ipynb", "04_likelihoods.ipynb"}


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory):
    """One persistent JAX compilation cache for the whole session: the notebooks fit the
    same small data with the same settings, so only the first one pays for compiling."""
    import os

    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(
        tmp_path_factory.getbasetemp().parent / "bayesmf-jax-cache")


def execute(path: Path, tmp_path: Path, monkeypatch, jax_cache):
    monkeypatch.setenv("BAYESMF_NB_FAST", "1")
    # the inline backend is non-interactive (Agg underneath) and keeps figures as outputs
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", jax_cache)
    # find this environment's python3 kernelspec before any user-level one (which could
    # point to another interpreter); jupyter_client runs its "python" as sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


def outputs_of(nb, kind=None):
    for cell in nb.cells:
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                if kind is None or out.get("output_type") == kind:
                    yield cell, out


def test_all_notebooks_present():
    assert EXPECTED <= {p.name for p in ALL}


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name}: a code cell has outputs"
            assert cell.get("execution_count") is None, f"{path.name}: execution counts"
    nbformat.validate(nbformat.reads(path.read_text(), as_version=4))


def _images(nb):
    return sum("image/png" in out.get("data", {}) for _, out in outputs_of(nb, "display_data"))


def test_01_quickstart(tmp_path, monkeypatch, jax_cache):
    nb = execute(NOTEBOOKS / "01_quickstart.ipynb", tmp_path, monkeypatch, jax_cache)
    assert _images(nb) >= 2
    text = "".join(str(out.get("data", {}).get("text/plain", "")) for _, out in outputs_of(nb))
    assert "Gibbs" in text and "title" in text



def _text(nb):
    parts = []
    for _, out in outputs_of(nb):
        parts.append(str(out.get("text", "")))
        parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


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
