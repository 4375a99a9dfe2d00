"""The caller's global random state, kept across a training run.

Lightning reproduces a run by seeding the GLOBAL generators (``seed_everything``: Python's
``random``, NumPy's legacy generator, torch CPU and CUDA, and ``PL_GLOBAL_SEED`` /
``PL_SEED_WORKERS`` in the environment): model initialisation, dropout and the DataLoader's
worker seeds draw from them, and they cannot be handed a ``torch.Generator``. So ``train`` seeds
them inside ``caller_rng_kept`` and the caller gets its own state back afterwards: a notebook,
a hyperparameter search or a test that called ``train`` draws the same numbers it would have
drawn without it. (Everything of ours that is random besides — the split, augmentation, the
bootstrap — takes its seed or generator explicitly.)
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")  # what seed_everything writes into os.environ


@contextmanager
def caller_rng_kept() -> Iterator[None]:
    """Run the body with the global generators free to reseed; restore the caller's state after.

    CUDA: restored exactly when the caller had initialised CUDA; otherwise its generators are
    re-seeded from the restored CPU seed, which is what the caller's lazy CUDA initialisation
    would have done (``torch.manual_seed`` seeds CUDA too), and CUDA is not initialised here.
    """
    python, legacy_numpy, torch_cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    env = {name: os.environ.get(name) for name in SEED_ENV}
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(legacy_numpy)
        torch.set_rng_state(torch_cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        else:
            torch.cuda.manual_seed_all(torch.initial_seed())  # queued until CUDA initialises
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
