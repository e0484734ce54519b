from __future__ import annotations

import pytest
import torch

from emmafuse.models import UFUSER_SIZE
from emmafuse.padding import crop, pad_to_network


@pytest.mark.parametrize("size,expected", [(1, 16), (15, 16), (16, 16), (17, 24), (480, 480), (481, 488)])
def test_padded_side(size, expected):
    assert UFUSER_SIZE.padded(size) == expected
    assert pad_to_network(torch.zeros(1, 1, size, 3))[0].shape[-2] == expected


@pytest.mark.parametrize("h,w", [(1, 1), (1, 40), (7, 13), (16, 16), (33, 9)])
def test_pad_then_crop_is_identity(h, w):
    x = torch.rand(2, 1, h, w)
    padded, pads = pad_to_network(x)
    assert padded.shape[-2] % 8 == 0 and padded.shape[-1] % 8 == 0
    assert min(padded.shape[-2:]) >= 16
    assert torch.equal(crop(padded, pads), x)


def test_reflect_used_when_possible():
    x = torch.arange(20.0).reshape(1, 1, 1, 20).expand(1, 1, 16, 20)
    padded, (top, bottom, left, right) = pad_to_network(x)
    assert (left, right) == (2, 2)
    # reflection mirrors without repeating the edge pixel
    assert padded[0, 0, 0, :3].tolist() == [2.0, 1.0, 0.0]
