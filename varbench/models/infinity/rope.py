"""2D rotary position embedding on the final token grid.

Each attention head of size d is split into d/2 channel pairs (2i, 2i+1). Pairs in the
first half rotate by y * theta_j, pairs in the second half by x * theta_j, with
theta_j = 10000^(-2j / (d/2)), j = 0 .. d/4 - 1. A token at row r, column c of an h x w
scale sits at (y, x) = (round(r * H / h), round(c * W / w)) of the final H x W grid
(`ScaleSchedule.rope_grid`), so coarse scales spread over the whole image instead of
crowding its top-left corner. Rounding is half-to-even, as in the release.

Tables hold fp32 (cos, sin) pairs, applied as a complex multiplication after the q/k
normalisation; they are computed once per (schedule, device) and cached.
"""
from __future__ import annotations

import torch

from varbench.models.infinity.schedule import ScaleSchedule

ROPE_BASE = 10000.0
_MAX_GRID = 128  # the release precomputes positions 0..127 per axis (2048 px / 16)


def grid_positions(schedule: ScaleSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, x) integer positions on the final grid of every token, each shaped (L,)."""
    big_h, big_w = schedule.rope_grid
    ys, xs = [], []
    for h, w in schedule.scales:
        # Same float32 arithmetic as the release so that .5 cases round identically.
        rows = (torch.arange(h) * (big_h / h)).round().long()
        cols = (torch.arange(w) * (big_w / w)).round().long()
        ys.append(rows[:, None].expand(h, w).reshape(-1))
        xs.append(cols[None, :].expand(h, w).reshape(-1))
    return torch.cat(ys), torch.cat(xs)


def axis_frequencies(head_dim: int) -> torch.Tensor:
    """theta_j for j = 0 .. head_dim/4 - 1, fp32."""
    half = head_dim // 2
    return 1.0 / (ROPE_BASE ** (torch.arange(0, half, 2, dtype=torch.int64).float() / half))


def rope_table(schedule: ScaleSchedule, head_dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """fp32 table shaped (L, head_dim/2, 2): (cos, sin) of the rotation of every token's
    channel pairs, stored as real pairs; `torch.view_as_complex` views it as e^(i angle)."""
    ys, xs = grid_positions(schedule)
    if int(max(ys.max(), xs.max())) >= _MAX_GRID:
        raise ValueError(f"RoPE grid {schedule.rope_grid} exceeds {_MAX_GRID} positions per axis")
    theta = axis_frequencies(head_dim)
    angles = torch.cat([ys.float()[:, None] * theta[None, :], xs.float()[:, None] * theta[None, :]], dim=1)
    return torch.stack((angles.cos(), angles.sin()), dim=-1).to(device)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., L, head_dim) by table (L, head_dim/2, 2): each channel pair
    (x_2i, x_2i+1) as the complex number x_2i + i x_2i+1, times e^(i angle); returns fp32."""
    x = x.float()
    if x.stride(-1) != 1 or any(stride % 2 for stride in x.stride()[:-1]):  # what view_as_complex needs
        x = x.contiguous()
    pairs = torch.view_as_complex(x.view(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * torch.view_as_complex(table)).flatten(-2)


class RopeCache:
    """Tables per (schedule, head_dim, device), built on first use."""

    def __init__(self) -> None:
        self._tables: dict[tuple, torch.Tensor] = {}

    def get(self, schedule: ScaleSchedule, head_dim: int, device: torch.device) -> torch.Tensor:
        key = (schedule.scales, schedule.rope_grid, head_dim, str(device))
        if key not in self._tables:
            self._tables[key] = rope_table(schedule, head_dim, device)
        return self._tables[key]
