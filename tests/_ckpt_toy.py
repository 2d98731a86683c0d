"""A toy scan kernel (AR(1) chains, Gibbs-like: one random update per iteration) for the
checkpoint tests; also runnable as a script so a test can kill it mid-run.

    python _ckpt_toy.py CHECKPOINT OUT.npz [--resume] [--sleep S]
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.infer.checkpoint import fingerprint, run_chunked, scan_chunk

N_ITER, EVERY, WARMUP, THIN = 60, 10, 10, 2
RHO = 0.9


class ToyState(NamedTuple):
    x: jnp.ndarray      # (chains, d) float32
    total: jnp.ndarray  # running sum of x, float32
    i: jnp.ndarray      # iteration counter, int32


def init(d: int = 3, chains: int = 2) -> ToyState:
    return ToyState(jnp.zeros((chains, d), jnp.float32), jnp.zeros((), jnp.float32),
                    jnp.zeros((), jnp.int32))


def step(key, st: ToyState):
    eps = jax.random.normal(key, st.x.shape, st.x.dtype)
    x = RHO * st.x + jnp.sqrt(1 - RHO**2) * eps
    return ToyState(x, st.total + x.sum(), st.i + 1), {"eps_mean": eps.mean()}


def extract(st: ToyState, info):
    return {"x": st.x, "total": st.total, "i": st.i}


CHUNK = scan_chunk(step, extract)
DATA = np.arange(12, dtype=np.float32).reshape(4, 3)  # stands in for the ratings


def run(path=None, resume=False, every=EVERY, sleep=0.0, seed=0, data=DATA, **kw):
    def on_chunk(t, n):
        print(f"chunk done {t}/{n}", flush=True)
        if sleep:
            time.sleep(sleep)

    return run_chunked(CHUNK, init(), jax.random.PRNGKey(seed), kw.pop("n_iter", N_ITER),
                       every=every, checkpoint_path=path, resume=resume,
                       warmup=kw.pop("warmup", WARMUP), thin=kw.pop("thin", THIN),
                       fingerprint=fingerprint(data, {"rho": RHO}), on_chunk=on_chunk, **kw)


if __name__ == "__main__":
    ck, out = sys.argv[1], sys.argv[2]
    sleep = float(sys.argv[sys.argv.index("--sleep") + 1]) if "--sleep" in sys.argv else 0.0
    res = run(ck, resume="--resume" in sys.argv, sleep=sleep)
    np.savez(out, resumed_at=-1 if res.resumed_at is None else res.resumed_at,
             chunks_run=res.chunks_run, **res.draws)
