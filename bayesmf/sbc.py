"""Moved to :mod:`bayesmf.testing.sbc` (the test harnesses live in ``bayesmf.testing``);
this alias keeps ``from bayesmf import sbc`` working."""

import sys

from bayesmf.testing import sbc as _sbc

sys.modules[__name__] = _sbc  # the same module object: private helpers and patches too
