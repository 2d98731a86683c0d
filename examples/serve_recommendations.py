#!/usr/bin/env python
"""Answer recommendation requests from a saved model (no refitting).

Load a model written by ``BayesMF.save`` / ``fit_evaluate_movielens.py --save`` once, then
answer requests for user ids given on the command line, or read from standard input one
request per line (``USER [N]``; an empty line or ``quit`` stops)::

    python examples/fit_evaluate_movielens.py --save model.nc
    python examples/serve_recommendations.py model.nc --users 1 42 --n 5
    printf '1\\n42 3\\n' | python examples/serve_recommendations.py model.nc --strategy upper

Each answer lists the items with their titles (MovieLens metadata, packaged latest-small
by default; ``--movies`` points to another MovieLens folder), the predicted rating and
its predictive standard deviation. Unknown users get the population fallback (the
"average" user's taste, flagged ``new user``). ``--format json`` prints one JSON object
per request instead, for piping into other programs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import bayesmf  # noqa: E402
from _common import load  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model file written by BayesMF.save (.nc)")
    p.add_argument("--users", nargs="*", help="user ids (default: read requests from stdin)")
    p.add_argument("--n", type=int, default=10, help="items per user")
    p.add_argument("--strategy", default="mean",
                   help="mean, upper (optimistic), lower (cautious), thompson, prob, ...")
    p.add_argument("--seed", type=int, default=0, help="seed of the Thompson strategy")
    p.add_argument("--movies", default=None,
                   help="MovieLens folder/zip for titles (default: packaged latest-small)")
    p.add_argument("--variant", default=None, help="MovieLens variant of --movies")
    p.add_argument("--no-titles", action="store_true", help="print item ids only")
    p.add_argument("--format", default="table", choices=["table", "json"])
    return p.parse_args(argv)


class Server:
    """Holds the loaded model and the title table; answers one request at a time."""

    def __init__(self, model, titles, strategy, seed):
        self.model = model
        self.titles = titles
        self.strategy = strategy
        self.seed = seed
        self.string_ids = model.posterior.users.is_string

    def parse_user(self, token: str):
        if self.string_ids:
            return token
        try:
            return int(token)
        except ValueError:
            raise ValueError(f"user ids of this model are integers, got {token!r}") from None

    def answer(self, user, n: int):
        recs = self.model.recommend(np.array([user]), n=n, strategy=self.strategy,
                                    seed=self.seed)
        if self.titles is not None:
            recs = self.titles.with_titles(recs)
        return recs


def _print_table(user, recs, strategy):
    known = bool(recs["known_user"].iloc[0]) if len(recs) else True
    tag = "" if known else "  (new user: population fallback)"
    print(f"user {user} -- top {len(recs)} by {strategy}{tag}")
    for row in recs.itertuples(index=False):
        title = getattr(row, "title", None)
        label = title if isinstance(title, str) else f"item {row.item}"
        print(f"  {row.rank:>3}. {label:<60.60} {row.mean:4.2f} +- {row.std:4.2f}")


def _print_json(user, recs):
    cols = [c for c in ("rank", "item", "title", "score", "mean", "std") if c in recs]
    items = json.loads(recs[cols].to_json(orient="records"))
    known = bool(recs["known_user"].iloc[0]) if len(recs) else True
    print(json.dumps({"user": user, "known_user": known, "items": items}))


def requests(a):
    if a.users:
        for u in a.users:
            yield u, a.n
        return
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0].lower() in ("quit", "exit"):
            return
        yield parts[0], parts[1] if len(parts) > 1 else a.n


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        model = bayesmf.load(a.model)
    except bayesmf.ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    titles = None if a.no_titles else load(a.movies, a.variant)
    server = Server(model, titles, a.strategy, a.seed)
    status = 0
    for token, n in requests(a):
        try:
            if isinstance(n, str):  # 'USER N' from stdin: N is checked per request
                try:
                    n = int(n)
                except ValueError:
                    raise ValueError(f"N must be an integer, got {n!r}") from None
            user = server.parse_user(token)
            recs = server.answer(user, n)
        except (ValueError, bayesmf.BayesMFError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        if a.format == "json":
            _print_json(user, recs)
        else:
            _print_table(user, recs, a.strategy)
        sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
