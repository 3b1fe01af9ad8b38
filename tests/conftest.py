"""Shared test setup."""

from __future__ import annotations

import pytest

try:
    import torch
except ImportError:  # pragma: no cover - torch is a dependency; keep bitops-only runs possible
    torch = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Every test runs torch on one thread: small CPU forwards gain nothing from a second thread on a
    shared 2-core machine (and lose 3-8x when another process competes). Set before each test's
    fixtures, module-scoped ones included, not once: numba's parallel kernels start an OpenMP runtime
    that resets the thread count torch reads (seen: 1 -> 2 after ``bitops.batch``'s parallel kernel),
    and tests that compare a training with another need the same count on both sides."""
    if torch is not None:
        torch.set_num_threads(1)
