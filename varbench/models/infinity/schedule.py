"""Scale schedules: which (h, w) token grids Infinity predicts, coarse to fine.

Infinity generates an image as a sequence of token maps of growing size. The released
model knows one list of 13 grids per aspect-ratio template (h/w in 1.0, 1.25, 1.333,
1.5, 1.75, 2.0, 2.5, 3.0 and the inverses); a resolution ("0.06M", "0.25M", "0.60M",
"1M") keeps the first 7, 10, 12 or 13 grids of its template. The VAE stride is 16, so
the square "1M" schedule ends at 64 x 64 tokens = 1024 x 1024 pixels.

2D RoPE places every scale of every resolution on the final grid of the template's
"1M" list (`rope_grid`), so this grid travels with the schedule.

Pure Python (no torch): the CLI and configs may import it cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass

from varbench.errors import UserError, did_you_mean

# h/w template -> the 13 (h, w) grids of its 1M schedule (public Infinity release).
_TEMPLATES: dict[float, tuple[tuple[int, int], ...]] = {
    1.000: ((1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16), (20, 20), (24, 24), (32, 32),
            (40, 40), (48, 48), (64, 64)),
    1.250: ((1, 1), (2, 2), (3, 3), (5, 4), (10, 8), (15, 12), (20, 16), (25, 20), (30, 24), (35, 28),
            (45, 36), (55, 44), (70, 56)),
    1.333: ((1, 1), (2, 2), (4, 3), (8, 6), (12, 9), (16, 12), (20, 15), (24, 18), (28, 21), (36, 27),
            (48, 36), (60, 45), (72, 54)),
    1.500: ((1, 1), (2, 2), (3, 2), (6, 4), (9, 6), (15, 10), (21, 14), (27, 18), (33, 22), (39, 26),
            (48, 32), (63, 42), (78, 52)),
    1.750: ((1, 1), (2, 2), (3, 3), (7, 4), (11, 6), (14, 8), (21, 12), (28, 16), (35, 20), (42, 24),
            (56, 32), (70, 40), (84, 48)),
    2.000: ((1, 1), (2, 2), (4, 2), (6, 3), (10, 5), (16, 8), (22, 11), (30, 15), (38, 19), (46, 23),
            (60, 30), (74, 37), (90, 45)),
    2.500: ((1, 1), (2, 2), (5, 2), (10, 4), (15, 6), (20, 8), (25, 10), (30, 12), (40, 16), (50, 20),
            (65, 26), (80, 32), (100, 40)),
    3.000: ((1, 1), (2, 2), (6, 2), (9, 3), (15, 5), (21, 7), (27, 9), (36, 12), (45, 15), (54, 18),
            (72, 24), (90, 30), (111, 37)),
}


def _with_inverses(templates: dict[float, tuple[tuple[int, int], ...]]) -> dict[float, tuple[tuple[int, int], ...]]:
    """Add the w/h-swapped template of every ratio; the release keys it int(1000/r)/1000."""
    full = {}
    for ratio, grids in templates.items():
        full[ratio] = grids
        if ratio != 1.0:
            full[int(1 / ratio * 1000) / 1000] = tuple((w, h) for h, w in grids)
    return dict(sorted(full.items()))


TEMPLATES = _with_inverses(_TEMPLATES)
SIZES: dict[str, int] = {"0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}  # size name -> number of scales
VAE_STRIDE = 16  # pixels per token side for the d32reg tokenizer


@dataclass(frozen=True)
class ScaleSchedule:
    """The token grids of one generation, plus the grid RoPE positions live on."""

    scales: tuple[tuple[int, int], ...]
    rope_grid: tuple[int, int]

    def __post_init__(self) -> None:
        if not self.scales:
            raise ValueError("a scale schedule needs at least one scale")
        if self.scales[0] != (1, 1):
            raise ValueError(f"the first scale must be 1x1 (the SOS token), got {self.scales[0]}")

    @property
    def num_scales(self) -> int:
        return len(self.scales)

    @property
    def tokens_per_scale(self) -> tuple[int, ...]:
        return tuple(h * w for h, w in self.scales)

    @property
    def num_tokens(self) -> int:
        return sum(self.tokens_per_scale)

    @property
    def final(self) -> tuple[int, int]:
        return self.scales[-1]

    def bounds(self) -> tuple[tuple[int, int], ...]:
        """(start, end) token offsets of every scale in the flattened sequence."""
        out, start = [], 0
        for n in self.tokens_per_scale:
            out.append((start, start + n))
            start += n
        return tuple(out)

    def prefix(self, num_scales: int) -> ScaleSchedule:
        """The first `num_scales` scales (same RoPE grid)."""
        if not 1 <= num_scales <= self.num_scales:
            raise ValueError(f"num_scales must be in 1..{self.num_scales}, got {num_scales}")
        return ScaleSchedule(self.scales[:num_scales], self.rope_grid)

    def pixel_size(self, stride: int = VAE_STRIDE) -> tuple[int, int]:
        """(height, width) in pixels of the decoded image."""
        h, w = self.final
        return h * stride, w * stride

    def scale_of_token(self) -> list[int]:
        """Scale index of every token of the flattened sequence."""
        return [k for k, n in enumerate(self.tokens_per_scale) for _ in range(n)]


def nearest_template(h_div_w: float) -> float:
    """The template ratio closest to `h_div_w` (how the release picks a template)."""
    if not h_div_w > 0:
        raise UserError(f"aspect ratio h/w must be positive, got {h_div_w}", "scale schedule")
    return min(TEMPLATES, key=lambda t: (abs(t - h_div_w), t))


def get_schedule(size: str | int = "1M", h_div_w: float = 1.0) -> ScaleSchedule:
    """The schedule of a resolution name ("0.06M" .. "1M") or a number of scales (1..13)."""
    template = nearest_template(h_div_w)
    grids = TEMPLATES[template]
    if isinstance(size, str):
        if size not in SIZES:
            raise UserError(f"unknown resolution {size!r}", "scale schedule",
                            f"Use one of {', '.join(SIZES)}." + did_you_mean(size, SIZES))
        count = SIZES[size]
    else:
        count = int(size)
        if not 1 <= count <= len(grids):
            raise UserError(f"number of scales must be in 1..{len(grids)}, got {count}", "scale schedule")
    return ScaleSchedule(grids[:count], rope_grid=grids[-1])


def schedule_for_pixels(height: int, width: int, stride: int = VAE_STRIDE) -> ScaleSchedule:
    """The released schedule whose final grid is exactly (height, width) pixels."""
    template = nearest_template(height / width)
    grids = TEMPLATES[template]
    for count in range(1, len(grids) + 1):
        h, w = grids[count - 1]
        if (h * stride, w * stride) == (height, width):
            return ScaleSchedule(grids[:count], rope_grid=grids[-1])
    sizes = sorted({(h * stride, w * stride) for h, w in grids})
    raise UserError(f"no scale schedule ends at {height}x{width} pixels", "scale schedule",
                    f"For h/w {template} use one of: {', '.join(f'{h}x{w}' for h, w in sizes)}.")
