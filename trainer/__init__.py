"""Regressor trainer: data cache, differentiable rendering, losses, loop (DDP), export (``train`` extra)."""
