"""Similar items: per-draw cosine, rotation invariance, intervals."""

import numpy as np
import pytest

from _uq_synth import make_posterior, posterior_from_arrays
from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import SpecError
from bayesmf.recommend import similar_items, similar_users


def test_known_cosines_one_draw():
    ang = np.array([0.0, 0.1, 1.0, 3.0])  # item angles in the plane
    V = np.stack([np.cos(ang), np.sin(ang)], 1)[None] * np.array([1, 5, 2, 3])[None, :, None]
    users, items = Vocabulary([0], "user"), Vocabulary(["a", "b", "c", "d"], "item")
    train = Ratings.from_indices([0], [0], [3.0], users, items)
    post = posterior_from_arrays(mu=[3.0], bu=np.zeros((1, 1)), bi=np.zeros((1, 4)),
                                 U=np.ones((1, 1, 2)), V=V, tau=[1.0], train=train)
    out = similar_items(post, "a", n=3)
    assert out["similar"].tolist() == ["b", "c", "d"]
    assert out["score"].to_numpy() == pytest.approx(np.cos([0.1, 1.0, 3.0]), abs=1e-6)
    assert (out["lower"] == out["upper"]).all() and (out["std"] < 1e-6).all()
    assert "a" not in set(similar_items(post, ["a", "b"], n=3)["similar"][:3])
    ex = similar_items(post, "a", n=3, exclude=["b"])
    assert ex["similar"].tolist() == ["c", "d"]
    assert similar_items(post, "a", n=1, candidates=["c", "d"])["similar"].tolist() == ["c"]


def test_rotation_invariance_and_intervals():
    post, _ = make_posterior(n_users=10, n_items=25, k=3, draws=6, seed=2, draw_sd=0.3)
    base = similar_items(post, [0, 4], n=5)
    rng = np.random.default_rng(0)
    for s in range(6):  # rotate every draw's factor space (U and V together)
        Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        post.draws["V"][0, s] = post.draws["V"][0, s] @ Q.astype(np.float32)
        post.draws["U"][0, s] = post.draws["U"][0, s] @ Q.astype(np.float32)
    rot = similar_items(post, [0, 4], n=5)
    assert rot["similar"].tolist() == base["similar"].tolist()
    assert rot["score"].to_numpy() == pytest.approx(base["score"].to_numpy(), abs=1e-5)
    assert (rot["lower"] <= rot["score"] + 1e-9).all() and (rot["score"] <= rot["upper"] + 1e-9).all()
    assert (np.diff(rot[rot.item == 0]["score"].to_numpy()) <= 1e-9).all()
    V = post.flat("V").astype(float)
    Vn = V / np.linalg.norm(V, axis=-1, keepdims=True)
    ref = np.einsum("sk,smk->sm", Vn[:, 0], Vn).mean(0)
    ref[0] = -np.inf
    assert rot[rot.item == 0]["similar"].tolist() == list(np.argsort(-ref, kind="stable")[:5])
    su = similar_users(post, 1, n=3)
    assert len(su) == 3 and 1 not in set(su["similar"])


def test_similar_validation():
    post, _ = make_posterior(n_users=5, n_items=6, k=2, draws=2)
    with pytest.raises(SpecError):
        similar_items(post, 0, n=0)
    with pytest.raises(Exception):
        similar_items(post, 999)
