"""Memory guard: limits resolve at call time; oversize allocations refuse clearly."""

from __future__ import annotations

import numpy as np
import pytest

from bayesmf import _memory as mem
from bayesmf.data.ratings import Ratings
from bayesmf.errors import MemoryLimitError, SpecError
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo


@pytest.mark.parametrize("text, want", [
    ("2GB", 2_000_000_000), ("2 gb", 2_000_000_000), ("1.5GiB", int(1.5 * 2**30)),
    ("512M", 512 * 2**20), ("512MiB", 512 * 2**20), ("1e9", 10**9), ("100", 100),
    ("10KB", 10_000), ("3K", 3072), (4096, 4096), (1e6, 10**6),
    (np.int64(2 * 10**9), 2 * 10**9), (np.float32(1e6), 10**6),
])
def test_parse_bytes(text, want):
    assert mem.parse_bytes(text) == want


@pytest.mark.parametrize("bad", ["", "GB", "2 parsecs", "-1GB", "0", 0, -5, True,
                                 float("nan"), "150%", [1],
                                 0.5, "0.4", np.bool_(True)])  # < 1 byte: a 0-byte limit
def test_parse_bytes_rejects(bad):
    with pytest.raises(SpecError, match="memory limit"):
        mem.parse_bytes(bad)


def test_percent_of_available():
    avail = mem.available_memory()
    assert avail is not None and avail > 0
    got = mem.parse_bytes("50%")
    assert abs(got - avail / 2) < 0.05 * avail  # available memory moves a little


def test_default_limit_is_fraction_of_available(monkeypatch):
    monkeypatch.delenv(mem.ENV_VAR, raising=False)
    monkeypatch.setattr(mem, "available_memory", lambda: 8 * 2**30)
    lim, source = mem.memory_limit()
    assert lim == 4 * 2**30
    assert "50%" in source and "8.0 GiB" in source


def test_meminfo_fallback(monkeypatch):
    """Without psutil the limit still comes from /proc/meminfo (on Linux)."""
    import builtins

    real_import = builtins.__import__

    def no_psutil(name, *a, **k):
        if name == "psutil":
            raise ImportError("no psutil")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_psutil)
    v = mem.available_memory()
    assert v is not None and v > 0
    mi = mem._meminfo_available()
    if mi is not None:
        assert abs(v - mi) < 0.2 * mi


def test_env_var_read_at_call_time(monkeypatch):
    monkeypatch.setenv(mem.ENV_VAR, "1MB")
    assert mem.memory_limit() == (10**6, f"{mem.ENV_VAR}=1MB")
    monkeypatch.setenv(mem.ENV_VAR, "2MB")
    assert mem.memory_limit()[0] == 2 * 10**6
    # the argument wins over the environment
    assert mem.memory_limit("3MB")[0] == 3 * 10**6
    monkeypatch.setenv(mem.ENV_VAR, "lots")
    with pytest.raises(SpecError, match=mem.ENV_VAR):
        mem.memory_limit()


def test_check_allocation_message(monkeypatch):
    monkeypatch.delenv(mem.ENV_VAR, raising=False)
    assert mem.check_allocation(10, "x", limit="1KB") == 1000
    with pytest.raises(MemoryLimitError) as ei:
        mem.check_allocation(5 * 2**30, "posterior draws (4 chains x 1000 draws)", limit="1GB")
    msg = str(ei.value)
    assert "posterior draws (4 chains x 1000 draws) needs 5.0 GiB" in msg
    assert "memory limit of 953.7 MiB (limit= argument)" in msg
    for word in ("thin", "fewer", "stream", "chunk", "memory_limit="):
        assert word in msg
    # the argument wins over the environment: raising the variable would not help
    assert mem.ENV_VAR not in msg
    with pytest.raises(MemoryLimitError, match=f"{mem.ENV_VAR} environment variable"):
        monkeypatch.setenv(mem.ENV_VAR, "1GB")
        mem.check_allocation(5 * 2**30, "x")
    assert isinstance(ei.value, MemoryError)  # catchable as the builtin too


def test_draws_bytes_formula():
    # C*D*((N+M)*(k+1)+2) float32 values without hyperparameters
    assert mem.draws_bytes(4, 1000, 610, 9724, 10, hyper=False) == 4 * 1000 * (
        (610 + 9724) * 11 + 2) * 4
    assert mem.draws_bytes(1, 1, 1, 1, 2) == ((2 * 3 + 2) + 2 * (2 + 4 + 1)) * 4


# ----------------------------------------------------------------------- Posterior wiring
def _posterior(S=50, N=30, M=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(N), 2)
    items = rng.integers(0, M, size=2 * N)
    keep = ~pd_duplicated(users, items)
    r = Ratings.from_arrays(users[keep], items[keep], rng.normal(3, 1, keep.sum()))
    spec = ModelSpec(rank=k)
    draws = {"mu": rng.normal(3, .1, (1, S)), "bu": rng.normal(0, .3, (1, S, r.n_users)),
             "bi": rng.normal(0, .3, (1, S, r.n_items)),
             "U": rng.normal(0, .3, (1, S, r.n_users, k)),
             "V": rng.normal(0, .3, (1, S, r.n_items, k)), "tau": rng.gamma(5, .2, (1, S))}
    return Posterior(draws, spec, r.users, r.items, TrainInfo.from_ratings(r), "test"), r


def pd_duplicated(u, i):
    key = u.astype(np.int64) * 1_000_000 + i
    _, first = np.unique(key, return_index=True)
    dup = np.ones(len(key), bool)
    dup[first] = False
    return dup


def test_prediction_refuses_under_tiny_limit(monkeypatch):
    post, r = _posterior()
    users, items = r.users.ids[:5], r.items.ids[:5]
    monkeypatch.delenv(mem.ENV_VAR, raising=False)
    ok = post.predict(users, items)  # normal sizes pass
    assert np.all(np.isfinite(ok.mean))
    monkeypatch.setenv(mem.ENV_VAR, "100B")
    with pytest.raises(MemoryLimitError, match=r"predictive block over 50 draws.*thin"):
        post.predict(users, items)
    with pytest.raises(MemoryLimitError, match="predictive draws for 5 pairs"):
        post.predictive_draws(users, items)


def test_chunk_size_follows_the_limit(monkeypatch):
    """A small limit makes more, smaller chunks with identical results."""
    post, r = _posterior(S=40)
    u = np.resize(np.arange(r.n_users), 500)
    i = np.resize(np.arange(r.n_items), 500)
    monkeypatch.delenv(mem.ENV_VAR, raising=False)
    full = post.summarize_indices(u, i)
    assert len(list(post._chunks(500))) == 1
    per_pair = mem.predictive_pair_bytes(post.n_samples, post.spec.rank)
    monkeypatch.setenv(mem.ENV_VAR, str(per_pair * 4 * 10))  # 10 pairs per chunk
    chunks = list(post._chunks(500))
    assert len(chunks) == 50 and all(c.stop - c.start == 10 for c in chunks)
    small = post.summarize_indices(u, i)
    for a, b in zip(full, small):
        np.testing.assert_allclose(a, b, rtol=1e-8)  # quantile bisection tolerance


def test_select_and_fallback_refuse(monkeypatch):
    post, r = _posterior()
    monkeypatch.setenv(mem.ENV_VAR, "2KB")
    sub = post.select(draws=slice(0, 10))  # a view: no new allocation, no check
    assert sub.n_draws == 10
    with pytest.raises(MemoryLimitError, match=r"selecting 1 chain\(s\) x 30 draw\(s\)"):
        post.select(draws=np.arange(30))
    monkeypatch.setenv(mem.ENV_VAR, "40KB")
    with pytest.raises(MemoryLimitError, match="population moments"):
        post.summarize_indices(np.array([-1]), np.array([0]))


def test_jax_draws_copied_to_host_are_checked(monkeypatch):
    jnp = pytest.importorskip("jax.numpy")
    post, _ = _posterior()
    draws = {k: jnp.asarray(v) for k, v in post.draws.items()}
    monkeypatch.setenv(mem.ENV_VAR, "1KB")
    with pytest.raises(MemoryLimitError, match="copying the posterior draws to host"):
        Posterior(draws, post.spec, post.users, post.items, post.train, "test")
    monkeypatch.delenv(mem.ENV_VAR)
    Posterior(draws, post.spec, post.users, post.items, post.train, "test")


# ----------------------------------------------------------------------- estimator wiring
def test_estimator_refuses_oversized_draws_before_fitting(monkeypatch):
    """BayesMF.fit checks chains x draws x (N+M) x (k+1) x 4 bytes against the limit
    before the method runs (nothing is compiled or sampled)."""
    import bayesmf
    from bayesmf.infer import METHODS

    if "gibbs" not in METHODS:
        pytest.skip("no gibbs")
    pytest.importorskip("bayesmf.infer.gibbs")
    _, r = _posterior()
    df = r.to_dataframe()
    calls = []
    monkeypatch.setattr("bayesmf.infer.gibbs.fit_gibbs",
                        lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    monkeypatch.setenv(mem.ENV_VAR, "1MB")
    need = mem.draws_bytes(4, 2000, r.n_users, r.n_items, 3)
    assert need > 10**6
    with pytest.raises(MemoryLimitError, match=r"the gibbs posterior draws \(4 chain\(s\) x "
                                               r"2000 draws x .* x rank 3.*thin"):
        bayesmf.BayesMF("gibbs", rank=3, num_samples=2000, num_chains=4).fit(df)
    assert not calls
    # memory_limit= of the estimator wins over the environment variable (it was ignored
    # by this check): the fit goes on to the method
    with pytest.raises(AssertionError):
        bayesmf.BayesMF("gibbs", rank=3, num_samples=2000, num_chains=4,
                        memory_limit="1GB").fit(df)
    assert calls == [1]
    calls.clear()
    # thinning (NUTS keeps num_samples // thin) and store_draws=False count
    monkeypatch.setattr("bayesmf.infer.nuts.fit_nuts",
                        lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(StopIteration))
    with pytest.raises(MemoryLimitError, match="4 chain.s. x 2000 draws"):
        bayesmf.BayesMF("nuts", rank=3, num_samples=2000, num_chains=4).fit(df)
    with pytest.raises(StopIteration):  # passes the check with thin=100 -> 20 draws
        bayesmf.BayesMF("nuts", rank=3, num_samples=2000, num_chains=4, thin=100).fit(df)
    monkeypatch.delenv(mem.ENV_VAR)
    with pytest.raises(StopIteration):  # normal sizes pass
        bayesmf.BayesMF("nuts", rank=3, num_samples=2000, num_chains=4).fit(df)


def test_estimator_memory_check_uses_the_fitters_own_defaults(monkeypatch):
    """The draws check sizes the fit the fitter will run: PyMC's fitters (whose module has
    no DEFAULTS: the check was skipped) and the Poisson family's own NUTS (1 chain x 200
    draws, not the Gaussian NUTS's 2 x 500)."""
    import bayesmf

    _, r = _posterior()
    df = r.to_dataframe()
    monkeypatch.setenv(mem.ENV_VAR, "2KB")
    with pytest.raises(MemoryLimitError, match=r"pymc-nuts posterior draws \(2 chain\(s\) x "
                                               r"500 draws"):
        bayesmf.BayesMF("pymc-nuts", rank=3).fit(df)
    with pytest.raises(MemoryLimitError, match=r"pymc-advi posterior draws \(1 chain\(s\) x "
                                               r"1000 draws"):
        bayesmf.BayesMF("pymc-advi", rank=3, num_samples=1000).fit(df)
    counts = df.assign(rating=np.round(np.abs(df["rating"])).astype(int))
    with pytest.raises(MemoryLimitError, match=r"nuts posterior draws \(1 chain\(s\) x "
                                               r"200 draws"):
        bayesmf.BayesMF("nuts", rank=3, likelihood="poisson").fit(counts)
