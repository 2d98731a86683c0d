"""Run every benchmark in sequence (``make bench``); each writes its table into
``benchmarks/results/``. Pass ``--quick`` for a fast smoke run of all of them.

Benchmarks need the peers (``pip install -e '.[bench]'``) and ``../shared/data``; a script
whose data or peer is missing says so in its table instead of failing the whole run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_map.py", "bench_gibbs.py", "bench_backends.py", "bench_recommend.py",
           "bench_likelihoods.py", "bench_priors.py", "sbc.py"]


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    failed = []
    for name in SCRIPTS:
        path = HERE / name
        if not path.exists():
            print(f"== {name}: missing, skipped", flush=True)
            continue
        print(f"== {name} {' '.join(args)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(path), *args], cwd=HERE.parent)
        print(f"== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
