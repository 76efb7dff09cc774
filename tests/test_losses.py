"""Losses on small hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reid.losses import INITIAL_LOGIT_SCALE, ReidLoss, id_loss, infonce, parse_loss_name, triplet


def smoothed_ce(logits: list[float], target: int, smoothing: float) -> float:
    """Cross-entropy with label smoothing written out: target weight 1 - s + s/K, others s/K."""
    k = len(logits)
    log_z = math.log(sum(math.exp(v) for v in logits))
    log_p = [v - log_z for v in logits]
    return -sum(((1 - smoothing) * (i == target) + smoothing / k) * lp for i, lp in enumerate(log_p))


def test_infonce_on_orthogonal_pairs_matches_the_formula():
    q = torch.eye(3)
    g = torch.eye(3)
    scale = torch.tensor(math.log(2.0))  # logits = 2 * cos
    expected = smoothed_ce([2.0, 0.0, 0.0], 0, 0.1)  # every row (and column) looks the same
    assert infonce(q, g, scale, label_smoothing=0.1).item() == pytest.approx(expected, rel=1e-6)


def test_infonce_is_symmetric_averaged_and_ignores_the_norm():
    torch.manual_seed(0)
    q, g = torch.randn(5, 8), torch.randn(5, 8)
    scale = torch.tensor(1.3)
    loss = infonce(q, g, scale, label_smoothing=0.0)
    logits = torch.exp(scale) * nn.functional.normalize(q, dim=1) @ nn.functional.normalize(g, dim=1).t()
    rows = [smoothed_ce(logits[i].tolist(), i, 0.0) for i in range(5)]
    cols = [smoothed_ce(logits[:, i].tolist(), i, 0.0) for i in range(5)]
    assert loss.item() == pytest.approx((sum(rows) / 5 + sum(cols) / 5) / 2, rel=1e-5)
    assert infonce(g, q, scale, 0.0).item() == pytest.approx(loss.item(), rel=1e-6)
    assert infonce(7 * q, 0.5 * g, scale, 0.0).item() == pytest.approx(loss.item(), rel=1e-5)


def test_triplet_batch_hard_on_points_in_the_plane():
    # pairs: player 0 at angles 0 and 60 degrees, player 1 at 90 and 180 degrees (unit circle)
    angle = torch.tensor([0.0, 90.0, 60.0, 180.0]) * math.pi / 180
    points = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    q, g, labels = points[:2], points[2:], torch.tensor([0, 1])
    chord = lambda degrees: 2 * math.sin(math.radians(degrees) / 2)  # noqa: E731
    # anchor 0deg: pos 60 (chord 60), neg min(90, 180) = 90; anchor 90: pos 180 -> 90, neg min(90 to 0, 30 to 60) = 30
    # anchor 60: pos 60, neg min(30, 120) = 30; anchor 180: pos 90, neg min(180, 120) = 120
    margin = 0.3
    expected = [max(0.0, chord(p) - chord(n) + margin) for p, n in ((60, 90), (90, 30), (60, 30), (90, 120))]
    assert triplet(q, g, labels, margin=margin).item() == pytest.approx(sum(expected) / 4, rel=1e-5)


def test_id_loss_classifies_both_images_of_every_pair():
    classifier = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    q = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    g = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    labels = torch.tensor([0, 1])
    expected = [smoothed_ce(classifier(x).tolist(), int(y), 0.1) for x, y in zip(torch.cat([q, g]), labels.repeat(2))]
    assert id_loss(q, g, labels, classifier, label_smoothing=0.1).item() == pytest.approx(sum(expected) / 4, rel=1e-6)


def test_sums_of_terms_and_their_parameters():
    torch.manual_seed(0)
    q, g, labels = torch.randn(4, 6), torch.randn(4, 6), torch.arange(4)
    loss = ReidLoss("infonce+id+triplet", embed_dim=6, num_classes=4)
    total, parts = loss(q, g, labels)
    assert set(parts) == {"infonce", "id", "triplet"}
    assert total.item() == pytest.approx(sum(parts.values()), rel=1e-6)
    assert loss.logit_scale.item() == pytest.approx(math.log(1 / 0.07)) == pytest.approx(INITIAL_LOGIT_SCALE)
    assert loss.classifier.weight.shape == (4, 6)
    only_infonce = ReidLoss("infonce", embed_dim=6)
    assert not hasattr(only_infonce, "classifier")
    assert ReidLoss("infonce", embed_dim=6, logit_scale_init=math.log(100)).logit_scale.item() == pytest.approx(4.60517)
    total.backward()
    assert loss.logit_scale.grad is not None and loss.classifier.weight.grad is not None


def test_loss_names_are_checked():
    assert parse_loss_name("id+triplet") == ("id", "triplet")
    for bad in ("arcface", "infonce+infonce", ""):
        with pytest.raises(ValueError, match="expected terms"):
            parse_loss_name(bad)
    with pytest.raises(ValueError, match="at least 2"):
        ReidLoss("id", embed_dim=4, num_classes=1)
