r"""Sampled negatives redrawn at every Gibbs sweep (on a static layout) or SVI step.

A Bernoulli model on implicit data is fitted to the positives (``y = 1``) plus sampled
negatives (``y = 0``, :mod:`bayesmf.data.negatives`). With ``redraw="sweep"`` the
negatives change at every sweep. The Gibbs sweep draws each side's rows from blocks of
observations laid out once with static shapes (:mod:`bayesmf.infer._rowblocks`), and a
fresh draw per user would change every item's number of negatives -- the item blocks'
shapes. So the redraw keeps both degree sequences and re-pairs:

* the fit-time training set (one draw of the rule) fixes each user's negative slots
  ``m_u`` and each item's negative slots ``k_i`` (``sum_u m_u = sum_i k_i = M``);
* at every sweep a random permutation ``rho`` of the ``M`` negative observations
  (uniform up to ties of 32-bit sort keys, :func:`_shuffle`) moves the item of
  observation ``neg[rho(s)]`` to observation ``neg[s]`` (whose user stays). Each user
  keeps ``m_u`` negatives, each item ``k_i``: the user-side blocks keep their
  observations and only their other-side (item) indices change; the item-side blocks
  keep their rows and slots and point each slot at the observation that now holds it
  (``obs_map``, :func:`~bayesmf.infer._rowblocks.remap_blocks`);
* **Swaps.** A re-paired negative can land on a positive of its user (a negative is
  never a positive). ``SWAP_ROUNDS`` rounds of pairwise exchanges repair most of these
  hits: each round pairs the slots two by two (a new random matching each round,
  :func:`_swap_round`) and a pair exchanges its items when one of them hits and neither
  does after the exchange. An exchange keeps every user's ``m_u`` and every item's
  ``k_i``, so the layouts stay valid; a round costs two membership tests per slot and
  no sort. On ML-1M (``uniform:4``) the share of hits falls from 8.0% to 1.3% with two
  rounds (``benchmarks/results/negative_redraw.md``);
* a negative that still hits a positive gets weight 0 for that sweep
  (``GibbsData.obs_mask``): its Gaussian pseudo-observation weight is 0 in both row draws
  and the mean draw, and its ``eta`` is 0 in the latent-scale move (a constant term of
  :math:`\log p(y \mid s\eta)`, so no influence on the move).

NumPyro SVI has no blocks: there (:mod:`bayesmf.infer.svi`, ``redraw_negatives``) every
optimisation step gives each negative *that the step uses* (all observations, or the
step's minibatch) the item of a uniformly random negative slot, independently
(:func:`resample_negatives`: the same law per slot, ``k_i / M``, without fixed item
totals; a draw that hits a positive of its user is drawn again, up to ``SWAP_ROUNDS``
times), with the same mask (``handlers.mask`` on the likelihood site). The model draws
it (:func:`bayesmf.infer.numpyro_model.build_model`, ``redraw``), after its minibatch,
from its own ``numpyro.prng_key()``.

The sharded sampler (:mod:`bayesmf.infer.sharded`, ``chain_method="sharded"``) runs the
same re-pairing inside its ``shard_map``: the permutation and the new ``item`` / mask are
computed on every device from the same key (replicated, like the rest of the state), and
each device remaps the blocks of its own rows, whose observation and other-side indices
are global. Its chain is therefore the unsharded chain's, as for fixed negatives.

Per Gibbs sweep this costs one sort of ``M`` random keys, gathers over the two layouts and
``1 + 2 * SWAP_ROUNDS`` membership tests of a negative among its user's positives: one
gather in a bitmap of the positives (``N * n_items`` bits, built when that is at most
``BITMAP_BYTES``), or else a binary search among the user's sorted positives (``steps``
halvings, static). The random stream is a ``fold_in`` of the sweep's key, so the rest of the sweep
draws the same numbers as without the redraw. Per SVI step it costs a draw and a binary
search per used observation.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.errors import SpecError
from bayesmf.infer._rowblocks import remap_blocks

__all__ = ["NegativeRedraw", "check_redraw_likelihood", "redraw_layout", "redraw_negatives",
           "resample_negatives", "REDRAW_STREAM", "SWAP_ROUNDS", "BITMAP_BYTES"]

#: ``fold_in`` constant of the redraw's key (its own stream within a sweep's key)
REDRAW_STREAM = 0x4E4547
#: swap rounds after each re-pairing (module docs, **Swaps**)
SWAP_ROUNDS = 2
#: the largest positives bitmap (``N * n_items / 8`` bytes) built for the membership test
BITMAP_BYTES = 64 * 2**20


class NegativeRedraw(NamedTuple):
    """Device arrays of the per-sweep redraw (a pytree; see the module docstring)."""

    neg_obs: jnp.ndarray    # (M,) int32: the observations that are sampled negatives
    item0: jnp.ndarray      # (n,) int32: each observation's item in the built layout
    pos_ptr: jnp.ndarray    # (N + 1,) int32: CSR offsets of each user's positives
    pos_items: jnp.ndarray  # (P,) int32: each user's positive items, sorted
    #: ``(ceil(N * n_items / 32),)`` uint32: bit ``u * n_items + i`` set for each positive
    #: (a membership test by one gather; None above :data:`BITMAP_BYTES`: binary search)
    pos_bits: jnp.ndarray | None = None
    #: ``()`` int32: the item count the bitmap is laid out by (None without a bitmap)
    n_items: jnp.ndarray | None = None


def check_redraw_likelihood(lik) -> None:
    """SpecError unless ``lik`` is fitted to sampled negatives (``sampled_negatives``: the
    Bernoulli likelihoods)."""
    if not lik.sampled_negatives:
        raise SpecError(f"redrawing sampled negatives applies to the Bernoulli likelihoods "
                        f"only, not {lik.name!r}")


def redraw_layout(user, item, y) -> tuple[NegativeRedraw, int]:
    """``(NegativeRedraw, steps)`` of a 0/1 training set (host arrays; ``y == 0`` marks the
    sampled negatives, ``y == 1`` the positives). ``steps``: the binary-search halvings
    that cover the largest number of positives of a user (a static setting; the search
    serves when the positives bitmap, ``N * n_items`` bits, would exceed
    :data:`BITMAP_BYTES` and is not built). SpecError if there are no negatives or no
    positives."""
    user = np.asarray(user, np.int64)
    item = np.asarray(item, np.int64)
    y = np.asarray(y)
    if user.shape != item.shape or user.shape != y.shape or user.ndim != 1:
        raise SpecError("user, item and y must be equal-length 1-d arrays")
    pos = y != 0
    if pos.all() or not pos.any():
        raise SpecError("redrawing negatives needs a 0/1 training set with both positives "
                        "(y = 1) and sampled negatives (y = 0)")
    n_users = int(user.max()) + 1
    pu, pi = user[pos], item[pos]
    order = np.lexsort((pi, pu))
    counts = np.bincount(pu, minlength=n_users)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    steps = int(np.ceil(np.log2(int(counts.max()) + 1))) + 1
    n_items = int(item.max()) + 1
    bits = nb = None
    if n_users * n_items <= min(8 * BITMAP_BYTES, 2**31 - 1):
        key = pu * n_items + pi
        words = np.zeros(-(-n_users * n_items // 32), np.uint32)
        np.bitwise_or.at(words, key >> 5, (np.uint32(1) << (key & 31).astype(np.uint32)))
        bits, nb = jnp.asarray(words), jnp.asarray(n_items, jnp.int32)
    rd = NegativeRedraw(jnp.asarray(np.flatnonzero(~pos).astype(np.int32)),
                        jnp.asarray(item.astype(np.int32)), jnp.asarray(ptr),
                        jnp.asarray(pi[order].astype(np.int32)), bits, nb)
    return rd, steps


def _hits_positive(rd: NegativeRedraw, users, items, steps: int):
    """``items[j]`` is a positive of ``users[j]``: one gather in the positives bitmap, or
    (without one) a binary search in the user's range."""
    if rd.pos_bits is not None:
        key = users * rd.n_items + items
        word = rd.pos_bits[key >> 5]
        return ((word >> (key & 31).astype(jnp.uint32)) & jnp.uint32(1)) == 1
    lo = rd.pos_ptr[users]
    end = rd.pos_ptr[users + 1]
    hi = end
    last = rd.pos_items.shape[0] - 1

    def halve(_, lh):
        lo, hi = lh
        mid = (lo + hi) // 2
        right = (lo < hi) & (rd.pos_items[jnp.minimum(mid, last)] < items)
        return jnp.where(right, mid + 1, lo), jnp.where(right | (lo >= hi), hi, mid)

    lo, _ = jax.lax.fori_loop(0, steps, halve, (lo, hi))
    return (lo < end) & (rd.pos_items[jnp.minimum(lo, last)] == items)


def _shuffle(key, M: int):
    """A random permutation of ``range(M)`` by one stable sort of 32-bit random keys.
    Uniform up to ties: about :math:`M^2/2^{33}` pairs of slots share a key (some 1,800
    of ML-1M's 4M negative slots) and keep their index order, a negligible departure for
    a re-pairing that the swap rounds then edit anyway. ``jax.random.permutation``'s exact
    shuffle takes three sorts: 1.46 s against 0.52 s for ``M = 4M`` on this project's
    2-core machine, most of a redraw's cost."""
    bits = jax.random.bits(key, (M,), jnp.uint32)
    return jax.lax.sort((bits, jnp.arange(M, dtype=jnp.int32)), num_keys=1,
                        is_stable=True)[1]


def _swap_round(key, rd: NegativeRedraw, users, src, hit, steps: int):
    """One round of pairwise swaps of the re-paired negatives (module docs, **Swaps**).
    The slots, rotated by a uniform ``c``, are cut into runs of a uniform length ``h``
    (``1 <= h <= M // 2``) and each slot of an even run is paired with the slot ``h``
    further on (in the next, odd run): disjoint pairs, a new matching each round. A pair
    exchanges its items (its ``src`` entries) when one of them hits a positive of its
    user and neither does after the exchange. Both slots of a pair compute the same
    decision, so every slot updates itself (no scatter). Returns the new ``(src, hit)``;
    every user and every item keeps its number of negative slots."""
    M = src.shape[0]
    kc, kh = jax.random.split(key)
    c = jax.random.randint(kc, (), 0, M)
    h = jax.random.randint(kh, (), 1, max(M // 2, 1) + 1)
    p = (jnp.arange(M, dtype=src.dtype) - c) % M           # position after the rotation
    first = (p // h) % 2 == 0
    q = jnp.where(first, p + h, p - h)                       # the partner's position
    paired = q < M                                           # (the last run may be alone)
    other = (jnp.clip(q, 0, M - 1) + c) % M                  # the partner's slot
    so = src[other]
    do = (paired & (hit | hit[other])
          & ~_hits_positive(rd, users, rd.item0[so], steps)
          & ~_hits_positive(rd, users[other], rd.item0[src], steps))
    return jnp.where(do, so, src), hit & ~do
def _repaired(key, rd: NegativeRedraw, user, src, steps: int, rounds: int):
    """``(src, item, mask)``: negative ``neg_obs[s]`` takes the item of observation
    ``src[s]`` after ``rounds`` swap rounds drawn from ``key`` (positives keep theirs);
    ``mask`` False where that item is still a positive of its user."""
    users = user[rd.neg_obs]
    hit = _hits_positive(rd, users, rd.item0[src], steps)
    for r in range(rounds):  # own streams: rounds=0 is the plain re-pairing of ``key``
        src, hit = _swap_round(jax.random.fold_in(key, 1 + r), rd, users, src, hit, steps)
    item = rd.item0.at[rd.neg_obs].set(rd.item0[src])
    return src, item, jnp.ones(item.shape, bool).at[rd.neg_obs].set(~hit)


def redraw_negatives(key, data, n_users: int, n_items: int, steps: int, remap=remap_blocks,
                     rounds: int = SWAP_ROUNDS):
    """``data`` (a :class:`~bayesmf.infer.gibbs_kernel.GibbsData` with ``redraw``) with
    its negatives re-paired by a random permutation drawn from ``key``: new ``item``
    array, remapped ``ublocks`` / ``iblocks`` and ``obs_mask`` (False where a re-paired
    negative hits a positive of its user, after ``rounds`` swap rounds, module docs).
    jit/vmap-able; the layouts' shapes are kept.

    ``remap(blocks, other_of_obs, n_other, obs_map=None)`` remaps one side's layout
    (:func:`~bayesmf.infer._rowblocks.remap_blocks`; the sharded sampler passes one for a
    device's :class:`~bayesmf.infer.sharded.ShardBlocks`, whose observation and other-side
    indices are global, so the same permutation -- replicated, from the same key -- moves
    the same observations on every device)."""
    rd = data.redraw
    M = rd.neg_obs.shape[0]
    src, item, mask = _repaired(key, rd, data.user, rd.neg_obs[_shuffle(key, M)], steps,
                                rounds)
    n = rd.item0.shape[0]
    # the item-side slot of the built observation src[s] now belongs to neg_obs[s]
    obs_map = jnp.arange(n, dtype=rd.neg_obs.dtype).at[src].set(rd.neg_obs)
    return data._replace(item=item, ublocks=remap(data.ublocks, item, n_items),
                         iblocks=remap(data.iblocks, data.user, n_users, obs_map),
                         obs_mask=mask)


def resample_negatives(key, rd: NegativeRedraw, users, items, negative, steps: int,
                       rounds: int = SWAP_ROUNDS):
    """``(items, mask)`` for a method without blocks (SVI, at every optimisation step), on
    the observations it uses this step (all of them, or a minibatch; ``users``,
    ``items``, ``negative`` (bool: a sampled negative) per used observation, repeats
    allowed): each negative takes the item of a uniformly random negative slot,
    independently (with replacement: the items' totals vary, the law of each slot,
    ``k_i / M``, is the Gibbs re-pairing's), drawn again up to ``rounds`` times where it
    is a positive of its user; positives keep theirs; ``mask`` as in
    :func:`redraw_negatives` (False where a new item is still a positive of its user).
    Costs ``O(B log P_u)`` for ``B`` used observations, not ``O(M)``."""
    M = rd.neg_obs.shape[0]
    src = rd.neg_obs[jax.random.randint(key, jnp.shape(users), 0, M)]
    new = jnp.where(negative, rd.item0[src], items)
    hit = negative & _hits_positive(rd, users, new, steps)
    for r in range(rounds):  # a hit is drawn again (own streams: rounds=0 is the plain draw)
        alt = rd.item0[rd.neg_obs[jax.random.randint(jax.random.fold_in(key, 1 + r),
                                                     jnp.shape(users), 0, M)]]
        take = hit & ~_hits_positive(rd, users, alt, steps)
        new, hit = jnp.where(take, alt, new), hit & ~take
    return new, ~hit
