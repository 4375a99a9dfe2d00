"""Model tests run tiny tensors: one intra-op thread is faster than several, and on a shared
CPU it avoids OpenMP threads spinning against each other (10x slower here under load)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
