"""Architecture facts: key layout, parameter counts, config inference, exp_on_reg, shared convs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from sapiens2.detect import RTMDET_M, RTMDET_TINY, RTMDet, RTMDetConfig, config_from_state_dict


def _unique_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # parameters() skips shared duplicates


def test_rtmdet_m_matches_the_official_counts():
    model = RTMDet(RTMDET_M)
    sd = model.state_dict()
    assert len(sd) == 692
    suffixes = [k.rsplit(".", 1)[1] for k in sd]
    assert suffixes.count("weight") == 234
    assert suffixes.count("bias") == 122
    assert suffixes.count("num_batches_tracked") == 112
    assert _unique_params(model.backbone) == 12_279_432
    assert _unique_params(model.neck) == 11_049_408
    assert _unique_params(model.bbox_head) == 1_334_607
    assert _unique_params(model) == 24_663_447
    assert sd["backbone.stage4.2.blocks.1.conv2.depthwise_conv.conv.weight"].shape == (384, 1, 5, 5)
    assert sd["neck.out_convs.2.conv.weight"].shape == (192, 768, 3, 3)


def test_tiny_keys_and_shapes_equal_mmdet_list(rtmdet_files):
    listed = json.loads(rtmdet_files["json"].read_text())["state_dict_keys"]
    sd = RTMDet(RTMDET_TINY).state_dict()
    assert [k for k, _, _ in listed] == list(sd)  # same keys in mmdet's order
    for key, shape, _ in listed:
        assert list(sd[key].shape) == shape, key


@pytest.mark.parametrize("cfg", [RTMDET_M, RTMDET_TINY], ids=["m", "tiny"])
def test_config_is_inferred_from_shapes(cfg):
    sd = RTMDet(cfg).state_dict()
    assert config_from_state_dict(sd) == cfg
    assert config_from_state_dict(sd, exp_on_reg=False) == replace(cfg, exp_on_reg=False)


def test_other_depths_and_widths_are_inferred():
    cfg = RTMDetConfig(
        stem_channels=(16, 32),
        stage_channels=(64, 128, 256, 512),
        stage_blocks=(1, 2, 2, 1),
        neck_channels=128,
        neck_blocks=1,
        head_channels=128,
        head_stacked_convs=2,
    )
    assert config_from_state_dict(RTMDet(cfg).state_dict()) == cfg


def test_bn_uses_configured_eps():
    model = RTMDet(replace(RTMDET_TINY, bn_eps=1e-3))
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert eps == {1e-3}
    assert {
        m.eps for m in RTMDet(RTMDET_TINY).modules() if isinstance(m, torch.nn.BatchNorm2d)
    } == {1e-5}


def test_head_convs_are_shared_and_bns_are_not():
    head = RTMDet(RTMDET_TINY).bbox_head
    for branch in (head.cls_convs, head.reg_convs):
        for i in range(2):
            assert branch[1][i].conv is branch[0][i].conv
            assert branch[2][i].conv is branch[0][i].conv
            assert branch[1][i].bn is not branch[0][i].bn


def test_exp_on_reg_switches_the_regression_output():
    torch.manual_seed(0)
    with_exp = RTMDet(RTMDET_TINY).eval()
    without = RTMDet(replace(RTMDET_TINY, exp_on_reg=False)).eval()
    without.load_state_dict(with_exp.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        cls_a, reg_a = with_exp(x)
        cls_b, reg_b = without(x)
    for level, stride in enumerate((8, 16, 32)):
        torch.testing.assert_close(cls_a[level], cls_b[level])
        torch.testing.assert_close(reg_a[level], (reg_b[level] / stride).exp() * stride)


def test_output_shapes_and_input_check():
    model = RTMDet(RTMDET_TINY).eval()
    with torch.inference_mode():
        cls, reg = model(torch.zeros(1, 3, 64, 96))
    assert [tuple(c.shape) for c in cls] == [(1, 1, 8, 12), (1, 1, 4, 6), (1, 1, 2, 3)]
    assert [tuple(r.shape) for r in reg] == [(1, 4, 8, 12), (1, 4, 4, 6), (1, 4, 2, 3)]
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.zeros(1, 3, 100, 96))
