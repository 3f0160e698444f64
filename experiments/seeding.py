"""Seeding every RNG: its own module so that both the training loop and the rebuilding of a saved run
(experiments.weights) use it without importing each other (training imports weights to save them)."""

from __future__ import annotations

import random

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed every RNG; call before building the model and the adapters."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
