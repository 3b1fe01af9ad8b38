"""Shared test setup."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Small CPU forwards gain nothing from a second thread on a shared 2-core machine (and lose
    3-8x when another process competes), so every test runs torch on one thread."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; keep bitops-only runs possible
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
