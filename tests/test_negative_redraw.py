"""Sampled negatives redrawn every Gibbs sweep (``negatives="uniform:4@sweep"``,
:mod:`bayesmf.infer.negative_redraw`): the rule's grammar and record, the re-pairing on
the static layouts (every observation in exactly one slot of each side, degrees kept, the
mask exactly the hits on positives), its law, and the estimator path."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bayesmf
from bayesmf.data import Interactions
from bayesmf.data.negatives import NegativeSampler, as_sampler
from bayesmf.errors import SpecError
from bayesmf.infer._rowblocks import LowRows
from bayesmf.infer.gibbs import fit_gibbs
from bayesmf.infer.gibbs_kernel import BPMFGibbs
from bayesmf.infer.negative_redraw import redraw_layout, redraw_negatives
from bayesmf.model.spec import ModelSpec


def _interactions(n_users=60, n_items=40, n=500, seed=0):
    rng = np.random.default_rng(seed)
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(0, n_users, n),
                                                     rng.integers(0, n_items, n))})
    u, i = map(np.array, zip(*pairs))
    return Interactions.from_arrays(u.astype(str), i.astype(str))


def test_rule_grammar_and_record():
    S = NegativeSampler
    assert S.from_string("uniform:4@sweep", seed=2) == S("uniform", per_positive=4, seed=2,
                                                        redraw="sweep")
    assert S.from_string("popularity^0.5:2 @ fit") == S("popularity", beta=0.5,
                                                        per_positive=2)
    for rule in ["uniform:4@sweep", "uniform:50/user@sweep", "popularity^0.75:2@sweep"]:
        s = S.from_string(rule)
        assert s.to_string() == rule and as_sampler(s.to_dict()) == s
    assert S.from_string("uniform:4@fit").to_string() == "uniform:4"
    # a record written before the field existed reads as "fit"
    old = {k: v for k, v in S("uniform", per_positive=4).to_dict().items() if k != "redraw"}
    assert as_sampler(old).redraw == "fit"
    for rule, match in [("uniform:4@epoch", "unknown redraw"), ("uniform:4@", "unknown "
                                                                "redraw"),
                        ("uniform@sweep@fit", "cannot parse")]:
        with pytest.raises(SpecError, match=match):
            S.from_string(rule)
    with pytest.raises(SpecError, match="redraw must be one of"):
        S(redraw="always")
    # the fit-time draw does not depend on the redraw mode
    x = _interactions()
    a = S.from_string("uniform:3", seed=5).training_ratings(x)
    b = S.from_string("uniform:3@sweep", seed=5).training_ratings(x)
    np.testing.assert_array_equal(a.item, b.item)


def _triples(b, rowmap=None):
    """``(row, other, obs)`` of every non-padding slot of a layout (parts, Woodbury)."""
    if isinstance(b, LowRows):
        return _triples(b.high, np.asarray(b.high_rows)) + _triples(b.rows)
    out = []
    for p, (s, e) in zip(b.parts, b.part_ranges() if b.parts else ()):
        loc = np.arange(s, e)
        out += _triples(p, loc if rowmap is None else np.asarray(rowmap)[loc])
    n_other = int(np.asarray(b.n_other)[0])
    for r, c, o in zip(b.seg_row, b.seg_cols, b.seg_obs):
        r, c, o = np.asarray(r), np.asarray(c), np.asarray(o)
        s, j = np.nonzero(c < n_other)
        rows = r[s] if rowmap is None else np.asarray(rowmap)[r[s]]
        out += list(zip(rows.tolist(), c[s, j].tolist(), o[s, j].tolist()))
    if isinstance(b.low, LowRows):
        out += _triples(b.low)
    return out


@pytest.mark.parametrize("low_width,row_parts", [(0, 1), (4, 2), (0, 3)])
def test_repairing_keeps_the_layouts_consistent(low_width, row_parts):
    x = _interactions()
    tr = as_sampler("uniform:3", seed=1).training_ratings(x)
    kern = BPMFGibbs(tr, ModelSpec(rank=16, likelihood="bernoulli-logit"),
                     redraw_negatives=True, low_width=low_width, max_width=8,
                     row_parts=row_parts)
    d, cfg = kern.data, kern.cfg
    y = np.asarray(tr.rating)
    neg = y == 0
    positives = set(zip(np.asarray(tr.user)[~neg].tolist(), np.asarray(tr.item)[~neg].tolist()))
    fn = jax.jit(lambda key: redraw_negatives(key, d, cfg.n_users, cfg.n_items,
                                              cfg.redraw_steps))
    seen = []
    for key in (1, 2):
        d2 = fn(jax.random.PRNGKey(key))
        user, item, mask = (np.asarray(a) for a in (d2.user, d2.item, d2.obs_mask))
        np.testing.assert_array_equal(user, tr.user)             # users keep their slots
        np.testing.assert_array_equal(item[~neg], np.asarray(tr.item)[~neg])
        np.testing.assert_array_equal(np.bincount(item[neg], minlength=tr.n_items),
                                      np.bincount(np.asarray(tr.item)[neg],
                                                  minlength=tr.n_items))
        hit = np.array([(a, b) in positives for a, b in zip(user, item)])
        np.testing.assert_array_equal(mask, ~(hit & neg))
        assert (item[neg] != np.asarray(tr.item)[neg]).mean() > 0.5
        for blocks, rows, cols in ((d2.ublocks, user, item), (d2.iblocks, item, user)):
            t = np.array(_triples(blocks))
            assert len(t) == len(user)                            # every obs once ...
            np.testing.assert_array_equal(np.sort(t[:, 2]), np.arange(len(user)))
            np.testing.assert_array_equal(rows[t[:, 2]], t[:, 0])  # ... in its row's slot
            np.testing.assert_array_equal(cols[t[:, 2]], t[:, 1])
        seen.append(item)
    assert (seen[0] != seen[1]).any()
    np.testing.assert_array_equal(np.asarray(fn(jax.random.PRNGKey(2)).item), seen[1])


def test_repairing_law_is_the_slot_distribution():
    """Each negative slot gets the item of a uniformly random slot (the re-pairing before
    its swap rounds): over many sweeps the frequency of item i in one user's slots is
    k_i / M."""
    x = _interactions(n_users=30, n_items=12, n=60, seed=3)
    tr = as_sampler("popularity:3", seed=2).training_ratings(x)
    rd, steps = redraw_layout(tr.user, tr.item, tr.rating)
    kern = BPMFGibbs(tr, ModelSpec(rank=2, likelihood="bernoulli-logit"),
                     redraw_negatives=True)
    d, cfg = kern.data, kern.cfg
    draw = jax.jit(jax.vmap(lambda kk: redraw_negatives(kk, d, cfg.n_users, cfg.n_items,
                                                        steps, rounds=0).item))
    items = np.asarray(draw(jax.random.split(jax.random.PRNGKey(0), 4000)))
    negs = np.asarray(rd.neg_obs)
    k = np.bincount(np.asarray(tr.item)[negs], minlength=tr.n_items) / negs.size
    freq = np.bincount(items[:, negs[0]], minlength=tr.n_items) / items.shape[0]
    assert np.abs(freq - k).max() < 4 * np.sqrt(k.max() * (1 - k.max()) / items.shape[0])
    with pytest.raises(SpecError, match="both positives"):
        redraw_layout(tr.user[:3], tr.item[:3], np.ones(3))


def test_fit_records_and_refusals(tmp_path):
    x = _interactions(n_users=80, n_items=50, n=900, seed=4)
    m = bayesmf.BayesMF(method="gibbs", likelihood="bernoulli-logit", rank=4,
                        num_samples=10, num_warmup=5, seed=1).fit(x,
                                                                   negatives="uniform:2@sweep")
    post = m.posterior
    assert post.attrs["settings"]["redraw_negatives"] is True
    rec = post.attrs["negatives"]
    assert rec["rule"] == "uniform:2@sweep" and rec["redraw"] == "sweep"
    assert np.isfinite(np.asarray(post.draws["V"])).all()
    m.save(tmp_path / "m.nc", draws=5)
    back = bayesmf.load(tmp_path / "m.nc")
    assert back.posterior.attrs["negatives"]["rule"] == "uniform:2@sweep"
    with pytest.raises(SpecError, match="need method='gibbs'"):
        bayesmf.BayesMF(method="map", likelihood="bernoulli-logit", rank=4).fit(
            x, negatives="uniform:2@sweep")
    tr = as_sampler("uniform:2").training_ratings(x)
    with pytest.raises(SpecError, match="Bernoulli likelihoods only"):
        fit_gibbs(tr, ModelSpec(rank=2), num_samples=2, num_warmup=0,
                  redraw_negatives=True)
    with pytest.raises(SpecError, match="True or False"):
        BPMFGibbs(tr, ModelSpec(rank=2, likelihood="bernoulli-logit"), redraw_negatives=1)
    from bayesmf.infer.svi import fit_svi

    with pytest.raises(SpecError, match="Bernoulli likelihoods only"):
        fit_svi(tr, ModelSpec(rank=2), num_steps=10, redraw_negatives=True)
    with pytest.raises(SpecError, match="redraw_negatives must be True or False"):
        fit_svi(tr, ModelSpec(rank=2, likelihood="bernoulli-logit"), num_steps=10,
                redraw_negatives="yes")


@pytest.mark.parametrize("likelihood", ["bernoulli-logit", "bernoulli-probit"])
def test_masked_observations_have_no_influence(likelihood):
    """A slot switched off for the sweep (a re-paired negative that hit a positive) weighs
    nothing: flipping its label leaves the whole sweep's new state unchanged, while
    flipping the label of an active observation changes it."""
    from bayesmf.infer.gibbs_kernel import _step

    x = _interactions(n_users=50, n_items=30, n=400, seed=6)
    tr = as_sampler("uniform:2", seed=1).training_ratings(x)
    kern = BPMFGibbs(tr, ModelSpec(rank=3, likelihood=likelihood))
    d = kern.data
    n = d.rating.shape[0]
    off = np.zeros(n, bool)
    off[np.random.default_rng(0).choice(n, 40, replace=False)] = True
    masked = d._replace(obs_mask=jax.numpy.asarray(~off))
    flip = np.asarray(d.rating).copy()
    flip[off] = 1 - flip[off]
    state = kern.init(jax.random.PRNGKey(0))
    step = jax.jit(lambda data, s: _step(kern.cfg, data, jax.random.PRNGKey(5), s)[0])
    a = step(masked, state)
    b = step(masked._replace(rating=jax.numpy.asarray(flip, d.rating.dtype)), state)
    for n_, va in a.flat().items():
        np.testing.assert_array_equal(np.asarray(va), np.asarray(b.flat()[n_]), err_msg=n_)
    flip_on = np.asarray(d.rating).copy()
    j = int(np.flatnonzero(~off)[0])
    flip_on[j] = 1 - flip_on[j]
    c = step(masked._replace(rating=jax.numpy.asarray(flip_on, d.rating.dtype)), state)
    assert not np.array_equal(np.asarray(a.U), np.asarray(c.U))


def test_init_scale_default_of_gibbs_on_sampled_negatives():
    """``init_scale=None``: 1.0 for a Gibbs fit to sampled negatives, the spec's 0.1 for
    other fits; an explicit value is kept."""
    x = _interactions(n_users=40, n_items=30, n=300, seed=7)
    kw = dict(likelihood="bernoulli-logit", rank=2, num_samples=2, num_warmup=0)
    got = bayesmf.BayesMF(method="gibbs", **kw).fit(x, negatives="uniform:1")
    assert got.posterior.spec.init_scale == 1.0
    assert got.posterior.attrs["settings"]["redraw_negatives"] is False
    assert bayesmf.BayesMF(method="gibbs", init_scale=0.3, **kw).fit(
        x, negatives="uniform:1").posterior.spec.init_scale == 0.3
    assert bayesmf.BayesMF(method="map", likelihood="bernoulli-logit", rank=2).fit(
        x, negatives="uniform:1").posterior.spec.init_scale == 0.1
    assert bayesmf.BayesMF(method="gibbs", rank=2, num_samples=2, num_warmup=0).fit(
        as_sampler("uniform:1").training_ratings(x)).posterior.spec.init_scale == 0.1


def test_svi_redraws_negatives_every_step():
    """SVI: each step gives every negative the item of a uniformly random negative slot
    (law k_i / M per slot, masks as in Gibbs); the model's mask and the fit: the slow
    test below."""
    from bayesmf.infer.negative_redraw import resample_negatives

    x = _interactions(n_users=30, n_items=12, n=60, seed=3)
    tr = as_sampler("uniform:3", seed=2).training_ratings(x)
    rd, steps = redraw_layout(tr.user, tr.item, tr.rating)
    user = jax.numpy.asarray(tr.user)
    item0, neg = jax.numpy.asarray(tr.item), jax.numpy.asarray(tr.rating == 0)
    draw = jax.jit(jax.vmap(lambda kk: resample_negatives(kk, rd, user, item0, neg, steps,
                                                          rounds=0)))
    items, masks = (np.asarray(a) for a in draw(jax.random.split(jax.random.PRNGKey(0),
                                                                 4000)))
    negs = np.asarray(rd.neg_obs)
    y = np.asarray(tr.rating)
    k = np.bincount(np.asarray(tr.item)[negs], minlength=tr.n_items) / negs.size
    freq = np.bincount(items[:, negs[0]], minlength=tr.n_items) / items.shape[0]
    assert np.abs(freq - k).max() < 4 * np.sqrt(k.max() * (1 - k.max()) / items.shape[0])
    np.testing.assert_array_equal(items[:, y == 1], np.broadcast_to(
        np.asarray(tr.item)[y == 1], (items.shape[0], int((y == 1).sum()))))
    positives = set(zip(np.asarray(tr.user)[y == 1].tolist(),
                        np.asarray(tr.item)[y == 1].tolist()))
    hit = np.array([(a, b) in positives for a, b in zip(np.asarray(tr.user), items[0])])
    np.testing.assert_array_equal(masks[0], ~(hit & (y == 0)))


def test_membership_by_bitmap_equals_the_binary_search():
    """The positives bitmap (one gather) and the binary search in each user's sorted
    positives (the fallback above BITMAP_BYTES) answer alike, on every (user, item) pair,
    and give the same redraw."""
    from bayesmf.infer.negative_redraw import _hits_positive

    x = _interactions(n_users=30, n_items=12, n=90, seed=3)
    tr = as_sampler("uniform:3", seed=2).training_ratings(x)
    rd, steps = redraw_layout(tr.user, tr.item, tr.rating)
    assert rd.pos_bits is not None
    search = rd._replace(pos_bits=None, n_items=None)
    uu, ii = (a.ravel() for a in np.meshgrid(np.arange(tr.n_users), np.arange(tr.n_items)))
    ju, ji = jax.numpy.asarray(uu, jax.numpy.int32), jax.numpy.asarray(ii, jax.numpy.int32)
    y = np.asarray(tr.rating)
    truth = set(zip(np.asarray(tr.user)[y == 1].tolist(), np.asarray(tr.item)[y == 1].tolist()))
    want = np.array([(a, b) in truth for a, b in zip(uu.tolist(), ii.tolist())])
    np.testing.assert_array_equal(np.asarray(_hits_positive(rd, ju, ji, steps)), want)
    np.testing.assert_array_equal(np.asarray(_hits_positive(search, ju, ji, steps)), want)
    kern = BPMFGibbs(tr, ModelSpec(rank=2, likelihood="bernoulli-logit"),
                     redraw_negatives=True)
    d, cfg = kern.data, kern.cfg
    a, b = (redraw_negatives(jax.random.PRNGKey(3), dd, cfg.n_users, cfg.n_items,
                             cfg.redraw_steps) for dd in (d, d._replace(redraw=search)))
    np.testing.assert_array_equal(np.asarray(a.item), np.asarray(b.item))
    np.testing.assert_array_equal(np.asarray(a.obs_mask), np.asarray(b.obs_mask))


def _hit_share(items, users, neg, positives):
    return float(np.mean([(a, b) in positives for a, b in zip(users[neg], items[neg])]))


def test_swap_rounds_repair_most_hits_and_keep_every_count():
    """A dense toy set (12 items, many hits): the swap rounds after the re-pairing cut the
    share of negatives that land on a positive of their user; each user and each item
    keeps its number of negatives, every observation still sits in one slot of each side
    (the layout test above runs with the default rounds), and the mask is exactly the
    remaining hits. SVI's redraws of a hit cut its share likewise."""
    from bayesmf.infer.negative_redraw import SWAP_ROUNDS, resample_negatives

    assert SWAP_ROUNDS >= 1
    x = _interactions(n_users=30, n_items=12, n=90, seed=3)
    tr = as_sampler("uniform:3", seed=2).training_ratings(x)
    kern = BPMFGibbs(tr, ModelSpec(rank=2, likelihood="bernoulli-logit"),
                     redraw_negatives=True)
    d, cfg = kern.data, kern.cfg
    y = np.asarray(tr.rating)
    neg = y == 0
    users = np.asarray(tr.user)
    positives = set(zip(users[~neg].tolist(), np.asarray(tr.item)[~neg].tolist()))
    keys = jax.random.split(jax.random.PRNGKey(0), 20)
    share = {}
    for rounds in (0, SWAP_ROUNDS):
        fn = jax.jit(jax.vmap(lambda kk: redraw_negatives(
            kk, d, cfg.n_users, cfg.n_items, cfg.redraw_steps, rounds=rounds)))
        d2 = fn(keys)
        items, masks = np.asarray(d2.item), np.asarray(d2.obs_mask)
        share[rounds] = np.mean([_hit_share(it, users, neg, positives) for it in items])
        for it, mk in zip(items, masks):
            np.testing.assert_array_equal(np.bincount(it[neg], minlength=tr.n_items),
                                          np.bincount(np.asarray(tr.item)[neg],
                                                      minlength=tr.n_items))
            hit = np.array([(a, b) in positives for a, b in zip(users, it)])
            np.testing.assert_array_equal(mk, ~(hit & neg))
    assert share[0] > 0.15 and share[SWAP_ROUNDS] < 0.5 * share[0], share
    rd, steps = redraw_layout(tr.user, tr.item, tr.rating)
    ju, ji, jn = (jax.numpy.asarray(a) for a in (users, tr.item, neg))
    sv = {}
    for rounds in (0, SWAP_ROUNDS):
        draw = jax.jit(jax.vmap(lambda kk: resample_negatives(kk, rd, ju, ji, jn, steps,
                                                              rounds=rounds)))
        items, masks = (np.asarray(a) for a in draw(keys))
        sv[rounds] = np.mean([_hit_share(it, users, neg, positives) for it in items])
        hit = np.array([(a, b) in positives for a, b in zip(users, items[0])])
        np.testing.assert_array_equal(masks[0], ~(hit & neg))
    assert sv[SWAP_ROUNDS] < 0.5 * sv[0], sv


def test_svi_model_redraws_the_negatives_of_its_minibatch():
    """The NumPyro model given ``redraw=`` (SVI with ``@sweep``) draws fresh items for the
    negatives of the observations it uses -- here a minibatch of B -- by the slot law,
    drawing a hit on a positive again up to SWAP_ROUNDS times, and masks those that still
    hit; positives keep theirs. Read off the likelihood site with factors that
    encode the pair: U_u = (1, u), V_i = (i, 1000), so eta = i + 1000 u."""
    from numpyro import handlers

    from bayesmf.infer.numpyro_model import build_model, model_data

    x = _interactions(n_users=30, n_items=12, n=60, seed=3)
    tr = as_sampler("uniform:3", seed=2).training_ratings(x)
    rd, steps = redraw_layout(tr.user, tr.item, tr.rating)
    spec = ModelSpec(rank=2, likelihood="bernoulli-logit", user_bias=False, item_bias=False,
                     global_mean=False)
    data = model_data(tr, spec)
    B = 64
    model = build_model(spec, data.n_users, data.n_items, offset=data.offset,
                        y_offset=data.y_offset, centered=True, batch_size=B,
                        redraw_steps=steps)
    n_u, n_i = data.n_users, data.n_items
    U = np.stack([np.ones(n_u), np.arange(n_u)], 1).astype(np.float32)
    V = np.stack([np.arange(n_i), np.full(n_i, 1000.0)], 1).astype(np.float32)
    args = tuple(jax.numpy.asarray(a) for a in data.args)

    @jax.jit
    @jax.vmap
    def site(key):
        m = handlers.substitute(handlers.seed(model, key),
                                data={"U": jax.numpy.asarray(U), "V": jax.numpy.asarray(V)})
        r = handlers.trace(m).get_trace(*args, redraw=rd)["r"]
        return r["fn"].base_dist.logits, r["fn"]._mask, r["value"]

    eta, mask, yb = (np.asarray(a) for a in site(jax.random.split(jax.random.PRNGKey(0),
                                                                   2000)))
    assert eta.shape == mask.shape == yb.shape == (2000, B)
    u, i = np.rint(eta / 1000).astype(int), np.rint(eta % 1000).astype(int)
    y = np.asarray(tr.rating)
    positives = set(zip(np.asarray(tr.user)[y == 1].tolist(),
                        np.asarray(tr.item)[y == 1].tolist()))
    hit = np.array([(a, b) in positives for a, b in zip(u.ravel(), i.ravel())]).reshape(u.shape)
    assert hit[yb == 1].all()                                      # positives unchanged
    np.testing.assert_array_equal(mask, ~(hit & (yb == 0)))       # hits masked out
    # the law of a redrawn negative of user u: the slot law k, a positive of u drawn again
    # up to R times: P(i) = k_i (1 + q_u + ... + q_u^R) off u's positives, k_i q_u^R on
    # them (q_u: the slot mass of u's positives)
    from bayesmf.infer.negative_redraw import SWAP_ROUNDS as R

    negs = np.asarray(rd.neg_obs)
    k = np.bincount(np.asarray(tr.item)[negs], minlength=n_i) / negs.size
    is_pos = np.zeros((n_u, n_i), bool)
    for a, b in positives:
        is_pos[a, b] = True
    q = (is_pos * k).sum(1, keepdims=True)
    law = np.where(is_pos, k * q ** R, k * sum(q ** t for t in range(R + 1)))
    expect = law[u[yb == 0]].mean(0)
    freq = np.bincount(i[yb == 0], minlength=n_i) / (yb == 0).sum()
    assert np.abs(freq - expect).max() < 4 * np.sqrt(k.max() * (1 - k.max()) / (yb == 0).sum())
    with pytest.raises(SpecError, match="redraw_steps"):
        no_steps = build_model(spec, n_u, n_i, offset=data.offset, y_offset=data.y_offset)
        handlers.trace(handlers.seed(no_steps, 0)).get_trace(*args, redraw=rd)
    full = build_model(spec, n_u, n_i, offset=data.offset, y_offset=data.y_offset,
                       centered=True, redraw_steps=steps)  # no minibatch: only the redraw
    t0 = handlers.trace(handlers.seed(full, 0)).get_trace(*args, redraw=rd)
    latent = {n: v["value"] for n, v in t0.items() if v["type"] == "sample"
              and not v["is_observed"]}
    with pytest.raises(SpecError, match="redrawing negatives needs a random key"):
        handlers.trace(handlers.substitute(full, latent)).get_trace(*args, redraw=rd)


@pytest.mark.slow
def test_svi_fit_with_redrawn_negatives():
    """The masked terms leave the SVI model's log density; the estimator path records the
    redraw."""
    from numpyro.infer.util import initialize_model, log_density

    from bayesmf.infer.numpyro_model import build_model, model_data

    x = _interactions(n_users=30, n_items=12, n=60, seed=3)
    tr = as_sampler("uniform:3", seed=2).training_ratings(x)
    y = np.asarray(tr.rating)
    # a masked term is out of the joint density: flipping its label changes nothing
    spec = ModelSpec(rank=2, likelihood="bernoulli-logit")
    data = model_data(tr, spec)
    model = build_model(spec, data.n_users, data.n_items, offset=data.offset,
                        y_offset=data.y_offset)
    u_, i_, y_ = (jax.numpy.asarray(a) for a in data.args)
    off = jax.numpy.asarray(np.arange(len(y)) % 3 != 0)
    y_flip = jax.numpy.where(off, y_, 1 - y_)
    trace = initialize_model(jax.random.PRNGKey(1), model,
                             model_args=(u_, i_, y_, off)).model_trace
    params = {n: t["value"] for n, t in trace.items()
              if t["type"] == "sample" and not t["is_observed"]}
    a, b, c = (log_density(model, args, {}, params)[0]
               for args in ((u_, i_, y_, off), (u_, i_, y_flip, off), (u_, i_, y_flip, None)))
    assert float(a) == pytest.approx(float(b)) and abs(float(a) - float(c)) > 1e-3
    m = bayesmf.BayesMF(method="svi", likelihood="bernoulli-logit", rank=2, seed=0,
                        num_steps=300, num_samples=20).fit(x, negatives="uniform:3@sweep")
    assert m.posterior.attrs["settings"]["redraw_negatives"] is True
    assert m.posterior.attrs["negatives"]["rule"] == "uniform:3@sweep"
    assert np.isfinite(np.asarray(m.posterior.draws["V"])).all()
