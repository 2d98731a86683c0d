"""A simulated kill of a checkpointed run (for resume tests).

:func:`killed_after_checkpoint` patches :func:`bayesmf.infer.checkpoint.save_checkpoint`
so that a run raises ``KeyboardInterrupt`` right after writing its ``n``-th checkpoint
(or the one of a given iteration) -- what a run killed between two checkpoints leaves on
disk -- and restores the real function on exit::

    with killed_after_checkpoint(3) as written, pytest.raises(KeyboardInterrupt):
        fit_gibbs(train, spec, checkpoint=path, checkpoint_every=5, ...)
    assert written == [5, 10, 15]
    post = fit_gibbs(train, spec, checkpoint=path, checkpoint_every=5, resume=True, ...)
"""

from __future__ import annotations

from contextlib import contextmanager

__all__ = ["killed_after_checkpoint"]


@contextmanager
def killed_after_checkpoint(n: int | None = None, *, iteration: int | None = None):
    """Interrupt after the ``n``-th checkpoint written, or after the checkpoint of
    ``iteration`` (exactly one of them); yields the list of the iterations written."""
    from bayesmf.infer import checkpoint as ck

    if (n is None) == (iteration is None):
        raise ValueError("give exactly one of n and iteration")
    real, written = ck.save_checkpoint, []

    def save_then_kill(*args, **kwargs):
        real(*args, **kwargs)
        written.append(kwargs["iteration"])
        if (n is not None and len(written) == n) or kwargs["iteration"] == iteration:
            raise KeyboardInterrupt("simulated kill")

    ck.save_checkpoint = save_then_kill
    try:
        yield written
    finally:
        ck.save_checkpoint = real
