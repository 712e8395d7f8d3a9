"""Every fine-tuning loss term against the official Sapiens2 code, on its own seeded inputs.

``tests/fixtures/official/losses.{safetensors,json}`` were made by the official code: each task
estimator's ``loss()`` with the loss list of its 1B config, on seeded inputs shaped like the
official batches (``<case>.<name>`` tensors; cases pose, seg, normal, pointmap near the target,
pointmap far from it, albedo). A term's ``value`` in the JSON is the term *after* its
``loss_weight`` (the official loss modules multiply by it; ``total`` is the sum of the values), and
our loss modules return weighted terms too, so the two are compared directly.

What each case catches in the code before the official defaults:

- normal / albedo: ``loss_grad_l1`` was 1/3 of the official value (the squared differences were
  averaged over pixels × channels; the official code sums the channels and divides by the count of
  the 1-channel mask).
- pointmap: ``loss_multiscale_l1_2`` was 9.8% low (the prediction was zeroed outside the mask
  before the ×2 upsampling) and ``loss_normal`` 7.6e-5 off (mask-border pixels were dropped).
- pointmap_far: ``loss_l1`` was 13.9, ``loss_shift_invariant`` 6.8 and ``loss_multiscale_l1_2``
  4.45 where the official head clamps the weighted values at 4 (the old code clamped the maps).
- pose, seg: unchanged; they guard against regressions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sapiens2.tasks import create_loss

FIXTURES = Path(__file__).parents[1] / "fixtures" / "official"
RTOL = 1e-5

# official loss name -> our term name, per task
TERMS = {
    "pose": {"loss_kpt": "mse"},
    "seg": {"loss_ce": "ce", "loss_dice": "dice"},
    "normal": {"loss_cosine_sim": "cosine", "loss_l1": "l1", "loss_grad_l1": "grad"},
    "pointmap": {
        "loss_l1": "l1",
        "loss_multiscale_l1_2": "multiscale_l1",
        "loss_silog": "silog",
        "loss_K_consistency": "intrinsics",
        "loss_shift_invariant": "shift_l1",
        "loss_normal": "normal",
        "loss_scale_l1": "scale",
    },
    "albedo": {"loss_l1": "l1", "loss_grad_l1": "grad", "loss_chroma_l1": "chroma"},
}


@pytest.fixture(scope="module")
def official() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = load_file(FIXTURES / "losses.safetensors")
    meta = json.loads((FIXTURES / "losses.json").read_text())["losses"]
    return tensors, meta


def _inputs(tensors: dict[str, torch.Tensor], case: str, task: str, dtype: torch.dtype):
    """Our loss's ``(pred, batch)`` from the fixture's ``<case>.*`` tensors."""

    def get(name: str) -> torch.Tensor:
        t = tensors[f"{case}.{name}"]
        return t.to(dtype) if t.is_floating_point() else t

    if task == "pose":  # official keypoint weights are (B, 1, K)
        return get("pred"), {
            "heatmaps": get("heatmaps"),
            "keypoint_weights": get("keypoint_weights")[:, 0],
        }
    if task == "seg":  # official labels are (B, 1, H, W)
        return get("logits"), {"seg": get("labels")[:, 0]}
    if task in ("normal", "albedo"):
        return get("pred"), {task: get("target"), "mask": get("mask")}
    batch = {"pointmap": get("target"), "mask": get("mask"), "scale": get("scale"), "K": get("K")}
    return (get("pred"), get("pred_scale")), batch


def _cross_rounding_is_fused() -> bool:
    """Whether ``torch.linalg.cross`` here leaves the rounding of its products (fused multiply-add,
    PyTorch's AVX2 / AVX-512 CPU kernels), so that ``cross(v, v) != 0``, as in the official run."""
    v = torch.tensor([[0.1, 0.7, 0.3]]) * 1000 / 3
    return bool((torch.linalg.cross(v, v) != 0).any())


CASES = ["pose", "seg", "normal", "pointmap", "pointmap_far", "albedo"]


def test_fixture_values_are_weighted_terms(official):
    """``value`` is the weighted term: the values sum to ``total`` (pose: 10 × MSE = 0.0216)."""
    _, meta = official
    assert sorted(meta) == sorted(CASES)
    for case in CASES:
        values = [t["value"] for t in meta[case]["terms"].values()]
        assert sum(values) == pytest.approx(meta[case]["total"], rel=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_every_term_equals_the_official_code(official, case):
    """float32, as the official run: each term to 1e-5 relative, and the total.

    The one caveat: the official ``loss_normal`` of the pointmap cases counts ~40 mask-corner pixels
    whose right and lower neighbours are both outside the mask, so both difference vectors equal
    ``-centre`` and the GT "normal" is ``cross(v, v)``: 0, or the rounding left by a fused
    multiply-add (PyTorch's AVX2 / AVX-512 CPU kernels; then it passes the 1e-6 length test).
    The official run had the fused rounding; where this PyTorch has not
    (``ATEN_CPU_CAPABILITY=default``) the term differs by 1.7e-4 (near) / 8.9e-4 (far) and is checked to 2e-3 instead.
    ``normal_drop_boundary=True`` leaves these pixels out (docs/training.md).
    """
    tensors, meta = official
    task = meta[case]["task"]
    pred, batch = _inputs(tensors, case, task, torch.float32)
    out = create_loss(task)(pred, batch)
    names = TERMS[task]
    assert set(out) == {*names.values(), "loss"}
    fused = _cross_rounding_is_fused()
    total, official_total = float(out["loss"]), meta[case]["total"]
    for official_name, term in meta[case]["terms"].items():
        ours = float(out[names[official_name]])
        if official_name == "loss_normal" and not fused:
            assert ours == pytest.approx(term["value"], rel=2e-3), (case, official_name, ours)
            total, official_total = total - ours, official_total - term["value"]
            continue
        assert ours == pytest.approx(term["value"], rel=RTOL), (case, official_name, ours)
    assert total == pytest.approx(official_total, rel=RTOL)


@pytest.mark.parametrize("case", CASES)
def test_terms_in_float64_agree_with_the_float32_official_values(official, case):
    """The same inputs in float64 (independent of float32 rounding on this CPU): every term but the
    pointmap normal term (see above: its official value depends on rounding) within 1e-5."""
    tensors, meta = official
    task = meta[case]["task"]
    pred, batch = _inputs(tensors, case, task, torch.float64)
    out = create_loss(task)(pred, batch)
    for official_name, term in meta[case]["terms"].items():
        if official_name == "loss_normal":
            continue
        ours = float(out[TERMS[task][official_name]])
        assert ours == pytest.approx(term["value"], rel=RTOL), (case, official_name, ours)
