"""The one training loop of the demo models: AdamW with weight decay 0.01 under a one-cycle schedule, the model in
training mode while it learns and in eval mode after."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm


def fit(model: nn.Module, batches: Iterable[tuple[Any, ...]], total: int, lr: float,
        loss_fn: Callable[..., torch.Tensor], desc: str, progress: bool) -> None:
    """Take ``total`` optimiser steps on ``model``, one per batch, minimising ``loss_fn(*batch)``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total)
    model.train()
    for batch in tqdm(batches, total=total, desc=desc, disable=not progress):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(*batch).backward()
        optimizer.step()
        schedule.step()
    model.eval()
