"""One progress bar for the iterative point/variational fits (implicit ALS, KL-NMF, CAVI):
``with iteration_bar(progress, total, desc, label) as tick: ... tick(value)`` advances
a tqdm bar by one iteration and shows ``label=value`` (nothing at all when ``progress``
is false). The MCMC driver has its own bar (:mod:`bayesmf.infer.driver`)."""

from __future__ import annotations

from contextlib import contextmanager

__all__ = ["iteration_bar"]


@contextmanager
def iteration_bar(progress: bool, total: int, desc: str, label: str):
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="it")

    def tick(value) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix({label: f"{value:.8g}"})

    try:
        yield tick
    finally:
        if bar is not None:
            bar.close()
