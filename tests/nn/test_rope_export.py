"""The exported form of the bfloat16 RoPE rotation (float32 arithmetic with casts) computes the
same numbers as the eager bfloat16 one, and frozen tables are the computed ones."""

import pytest
import torch

from sapiens2.nn.rope import RopePositionEmbedding, _rotate, _rotate_with_casts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_rotation_with_casts_is_bitwise_the_native_one(dtype, low):
    g = torch.Generator().manual_seed(0)
    rope = RopePositionEmbedding(16, dtype=low)
    sin, cos = rope((6, 5))  # (30, 16) tables in the low dtype
    half = 8
    sin_signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    # 9 prefix tokens that are not rotated, values spread over many binades
    x = torch.randn(2, 3, 9 + 30, 16, generator=g, dtype=dtype) * torch.logspace(
        -3, 3, 16, dtype=dtype
    )
    native = _rotate(x, sin_signed, cos)
    cast = _rotate_with_casts(x, sin_signed.float(), cos.float(), low)
    assert cast.dtype == native.dtype == dtype
    assert torch.equal(cast, native)


def test_frozen_tables_are_the_computed_ones_and_refuse_other_grids():
    rope = RopePositionEmbedding(16)
    sin, cos = rope((4, 3))
    state = rope.state_dict()
    rope.freeze((4, 3))
    assert rope.state_dict().keys() == state.keys()  # non-persistent
    fs, fc = rope((4, 3))
    assert torch.equal(fs, sin) and torch.equal(fc, cos)
    with pytest.raises(ValueError, match="frozen for a 4x3"):
        rope((5, 3))
    rope.unfreeze()
    assert not hasattr(rope, "frozen_sin")
    assert torch.equal(rope((5, 3))[0], rope._tables(5, 3, rope.periods)[0])
