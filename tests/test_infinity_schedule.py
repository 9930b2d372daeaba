"""Scale schedules and 2D RoPE positions of the Infinity backbone."""
from __future__ import annotations

import math

import pytest
import torch

from varbench.errors import UserError
from varbench.models.infinity.rope import axis_frequencies, grid_positions, rope_table
from varbench.models.infinity.schedule import TEMPLATES, get_schedule, nearest_template, schedule_for_pixels


def test_square_1m_schedule_matches_the_release():
    s = get_schedule("1M")
    assert [h for h, _ in s.scales] == [1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64]
    assert s.tokens_per_scale == (1, 4, 16, 36, 64, 144, 256, 400, 576, 1024, 1600, 2304, 4096)
    assert sum(s.tokens_per_scale[:8]) == 921
    assert s.num_tokens == 10_521
    assert s.bounds()[-1] == (10_521 - 4096, 10_521)
    assert s.pixel_size() == (1024, 1024)


@pytest.mark.parametrize("size,scales,pixels",
                         [("0.06M", 7, 256), ("0.25M", 10, 512), ("0.60M", 12, 768), ("1M", 13, 1024)])
def test_resolution_names(size, scales, pixels):
    s = get_schedule(size)
    assert s.num_scales == scales
    assert s.pixel_size() == (pixels, pixels)
    assert s.rope_grid == (64, 64)  # every resolution lives on the 1M grid
    assert schedule_for_pixels(pixels, pixels) == s


def test_aspect_ratio_templates():
    assert len(TEMPLATES) == 15
    assert sorted(TEMPLATES) == [0.333, 0.4, 0.5, 0.571, 0.666, 0.75, 0.8, 1.0, 1.25, 1.333, 1.5, 1.75, 2.0, 2.5, 3.0]
    for ratio, grids in TEMPLATES.items():
        assert len(grids) == 13 and grids[0] == (1, 1)
        for count in (7, 10, 12, 13):  # each resolution's final grid has the template's ratio
            h, w = grids[count - 1]
            assert abs(h / w - ratio) < 0.01, (ratio, count, h, w)
    assert TEMPLATES[1.5][-1] == (78, 52) and TEMPLATES[3.0][-1] == (111, 37)
    assert TEMPLATES[0.333] == tuple((w, h) for h, w in TEMPLATES[3.0])
    assert get_schedule("1M", 1.5).num_tokens == sum(h * w for h, w in TEMPLATES[1.5])


def test_nearest_template_and_errors():
    assert nearest_template(1.3) == 1.333
    assert nearest_template(0.7) == 0.666
    assert nearest_template(1.0) == 1.0
    with pytest.raises(UserError, match="Did you mean '0.25M'"):
        get_schedule("0.25m")
    with pytest.raises(UserError, match="no scale schedule ends at 500x500"):
        schedule_for_pixels(500, 500)
    assert get_schedule(5).scales == ((1, 1), (2, 2), (4, 4), (6, 6), (8, 8))


def test_rope_positions_on_final_grid():
    ys, xs = grid_positions(get_schedule("1M"))
    assert ys.shape == (10_521,)
    start = 1 + 4 + 16  # the 6x6 scale
    assert ys[start:start + 36:6].tolist() == [0, 11, 21, 32, 43, 53]  # round(r * 64 / 6)
    assert xs[start:start + 6].tolist() == [0, 11, 21, 32, 43, 53]
    assert ys[-4096:].max() == 63 and xs[0] == 0
    # Half-way cases round to even, as torch does: h/w 1.5, scale 48x32 of the 78x52 grid,
    # row 4 sits at 4 * 78 / 48 = 6.5 -> 6; row 12 at 19.5 -> 20.
    s = get_schedule("1M", 1.5)
    start, _ = s.bounds()[10]
    rows = grid_positions(s)[0][start:start + 48 * 32:32]
    assert rows[4].item() == 6 and rows[12].item() == 20


def test_rope_table_rotates_pairs_by_y_then_x():
    s = get_schedule(7)
    table = torch.view_as_complex(rope_table(s, head_dim=128))  # (cos, sin) pairs as e^(i angle)
    assert table.shape == (s.num_tokens, 64) and table.dtype == torch.complex64
    ys, xs = grid_positions(s)
    theta = axis_frequencies(128)
    assert theta.shape == (32,)
    assert theta[1].item() == pytest.approx(10000 ** (-2 / 64))
    token = 200
    expected_y = torch.polar(torch.ones(32), ys[token].float() * theta)
    expected_x = torch.polar(torch.ones(32), xs[token].float() * theta)
    assert torch.allclose(table[token, :32], expected_y) and torch.allclose(table[token, 32:], expected_x)
    assert torch.allclose(table.abs(), torch.ones(()))
    assert math.isclose(table[0].angle().abs().max().item(), 0.0)  # the SOS sits at (0, 0)
