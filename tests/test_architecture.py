"""The architecture the README promises, checked in fresh interpreters: imports flow one
way (evaluate never imports recommend; the model layer never imports inference; scoring,
evaluate and the posterior never import a backend), and adding a likelihood means one file
plus one registry line (the CLI and the method registry read the registries)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _modules_after(stmt: str) -> set:
    code = f"import json, sys\n{stmt}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("stmt, forbidden", [
    ("import bayesmf.evaluate, bayesmf.evaluate.protocols, bayesmf.evaluate.calibration",
     ("bayesmf.recommend", "jax", "numpyro", "pymc")),
    ("import bayesmf.scoring, bayesmf.predictive, bayesmf.posterior", ("bayesmf.recommend",
                                                                       "bayesmf.evaluate",
                                                                       "jax", "pymc")),
    ("import bayesmf.model.likelihoods, bayesmf.model.priors, bayesmf.model.linear",
     ("jax", "numpyro", "pymc")),
    ("import bayesmf.recommend", ("jax", "numpyro", "pymc")),
])
def test_imports_flow_one_way(stmt, forbidden):
    mods = _modules_after(stmt)
    bad = sorted(m for m in mods for f in forbidden if m == f or m.startswith(f + "."))
    assert not bad, f"{stmt!r} imported {bad}"


def test_cli_choices_come_from_the_registries():
    from bayesmf.cli import build_parser
    from bayesmf.model.likelihoods import LIKELIHOODS
    from bayesmf.model.priors import FACTOR_PRIORS

    fit = build_parser()._subparsers._group_actions[0].choices["fit"]
    opts = {a.dest: a for a in fit._actions}
    assert set(opts["likelihood"].choices) == set(LIKELIHOODS)
    assert set(opts["prior"].choices) == set(FACTOR_PRIORS)
    assert "gamma" in FACTOR_PRIORS  # the HPF prior is a registered object, not a CLI name


#: package -> packages it must never import (at any level, lazily included); selection.py
#: (select_confidence) fits models: it sits beside the estimator, above evaluate
LAYERS = {
    "data": ("model", "infer", "posterior", "predictive", "scoring", "evaluate", "recommend",
             "estimator", "selection", "cli"),
    # the predictive distributions are pure numpy: the likelihoods build them
    "predictive": ("data", "model", "infer", "posterior", "scoring", "evaluate", "recommend",
                   "estimator", "selection", "cli"),
    "model": ("infer", "posterior", "scoring", "evaluate", "recommend", "estimator",
              "selection", "cli"),
    "scoring": ("infer", "evaluate", "recommend", "estimator", "selection", "cli"),
    "evaluate": ("infer", "recommend", "estimator", "selection", "cli"),
    "recommend": ("infer", "evaluate", "estimator", "selection", "cli"),
}


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_packages_import_only_lower_layers(package):
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "bayesmf" / package
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                parts = n.split(".")
                if parts[0] == "bayesmf" and len(parts) > 1 and parts[1] in LAYERS[package]:
                    bad.append(f"{path.name}:{node.lineno} {n}")
    assert not bad, bad
