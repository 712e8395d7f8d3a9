from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sapiens2.models import create_model
from sapiens2.pretrain.distill import (
    DistillConfig,
    ProjectionHead,
    TeacherCentering,
    cross_view_loss,
    ema_momentum,
    ema_update,
    koleo_loss,
    teacher_temperature,
)
from sapiens2.pretrain.networks import Student, Teacher

CFG = DistillConfig(num_prototypes=32, head_hidden=16, head_bottleneck=8)


def test_ema_is_exact():
    torch.manual_seed(0)
    student = Student(create_model("sapiens2_tiny", device="cpu"), None, CFG)
    teacher = Teacher.from_student(student, CFG)
    names = [n for n, _ in teacher.named_parameters()]
    assert names == [n for n, _ in student.named_parameters()]  # no decoder: same names
    for n, p in teacher.named_parameters():
        assert torch.equal(p, dict(student.named_parameters())[n])  # starts as a copy
        assert not p.requires_grad
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    m = 0.992
    ema_update(teacher.named_parameters(), student.named_parameters(), m)
    for n, p in teacher.named_parameters():
        s = dict(student.named_parameters())[n]
        expected = before[n].mul(m).add(s, alpha=1 - m)  # t*m + (1-m)*s, bit for bit
        assert torch.equal(p, expected), n
        d = before[n].double() * m + s.double() * (1 - m)
        assert (p.double() - d).abs().max() <= 1e-6 * d.abs().max().clamp_min(1e-30)
        assert torch.equal(p, expected), n
    # m = 1 keeps the teacher, m = 0 copies the student
    ema_update(teacher.named_parameters(), student.named_parameters(), 0.0)
    for n, p in teacher.named_parameters():
        assert torch.equal(p, dict(student.named_parameters())[n])


def test_ema_rejects_mismatched_parameters():
    a = torch.nn.Linear(2, 2)
    b = torch.nn.Linear(2, 3)
    with pytest.raises(KeyError, match="differ"):
        ema_update([("w", a.weight)], [("v", a.weight)], 0.9)
    with pytest.raises(ValueError, match="shard"):
        ema_update([("w", a.weight)], [("w", b.weight)], 0.9)


def test_schedules():
    cfg = DistillConfig(teacher_temp_warmup_steps=1000)
    assert teacher_temperature(0, cfg) == pytest.approx(0.065)
    assert teacher_temperature(500, cfg) == pytest.approx(0.0675)
    assert teacher_temperature(1000, cfg) == teacher_temperature(10**6, cfg) == 0.07
    assert ema_momentum(123, 1000, cfg) == 0.992  # constant by default
    ramp = DistillConfig(ema_momentum=0.992, ema_momentum_end=1.0)
    assert ema_momentum(0, 1000, ramp) == pytest.approx(0.992)
    assert ema_momentum(500, 1000, ramp) == pytest.approx(0.996)
    assert ema_momentum(1000, 1000, ramp) == pytest.approx(1.0)


def test_centering_probabilities_and_update():
    c = TeacherCentering(4, momentum=0.9)
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
    p = c(logits, 0.5)
    torch.testing.assert_close(p, F.softmax(logits / 0.5, -1))
    c.update(logits)  # the first update starts the centre at the batch mean
    torch.testing.assert_close(c.center, logits.mean(0, keepdim=True))
    c.update(logits * 2)
    torch.testing.assert_close(c.center[0], 0.9 * logits.mean(0) + 0.1 * 2 * logits.mean(0))
    p2 = c(logits, 0.5)
    torch.testing.assert_close(p2, F.softmax((logits - c.center) / 0.5, -1))


def test_cross_view_loss_uses_the_paper_pairs():
    torch.manual_seed(1)
    g, n_local, b, k = 2, 4, 3, 5
    sg, sl = torch.randn(g, b, k), torch.randn(n_local, b, k)
    tp = F.softmax(torch.randn(g, b, k), -1)
    t = 0.1

    def ce(q, s):
        return -(q * F.log_softmax(s / t, -1)).sum(-1).mean()

    pairs = [ce(tp[1], sg[0]), ce(tp[0], sg[1])]  # global-global, never a view with itself
    pairs += [ce(tp[j], sl[i]) for j in range(g) for i in range(n_local)]  # global-local
    assert len(pairs) == 10
    torch.testing.assert_close(cross_view_loss(sg, sl, tp, t), torch.stack(pairs).mean())
    # the loss is minimal (the teacher entropy) when the student matches the teacher
    same = cross_view_loss(torch.log(tp[[1, 0]]) * t, None, tp, t)
    entropy = -(tp * tp.log()).sum(-1).mean()
    torch.testing.assert_close(same, entropy, atol=1e-5, rtol=1e-5)


def test_koleo_value():
    # 4 unit vectors on a square: every nearest neighbour is at distance sqrt(2)
    x = torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]]) * 3
    assert koleo_loss(x).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-6)
    # spreading the points lowers it
    close = torch.tensor([[1.0, 0], [1, 0.1], [1, 0.2], [1, 0.3]])
    assert koleo_loss(close) > koleo_loss(x)
    with pytest.raises(ValueError, match="at least 2"):
        koleo_loss(torch.randn(1, 3))


def test_projection_head_prototypes_are_normalised():
    head = ProjectionHead(16, CFG)
    y = head(torch.randn(5, 16))
    assert y.shape == (5, 32)
    assert y.abs().max() <= 1.0 + 1e-5  # cosine similarities
