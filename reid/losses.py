"""Training losses for pairs of images of the same player: InfoNCE (the paper's), ID and triplet.

A training batch holds B pairs ``(query image, another image of the same player)`` of B different
players. Every loss below receives the two embedding sets ``query`` and ``gallery`` (B, D) of this
process plus ``rank`` and ``world_size``: under DDP the embeddings of all ranks are gathered **with
gradients** first, so each rank computes the loss of the whole global batch (world_size * B pairs;
every other player of every rank is a negative), exactly the single-process loss on the concatenated
batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reid.distributed import gather_features

LOSS_TERMS = ("infonce", "id", "triplet")
# The published TimmModel's initial log-temperature (CLIP's initialisation): logits = 14.3 * cosine.
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)


def infonce(query: torch.Tensor, gallery: torch.Tensor, logit_scale: torch.Tensor, label_smoothing: float = 0.1,
            rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP loss) between paired embeddings.

    query, gallery: (B, D) embeddings of this rank, row i of both = the same player (not yet normalised).
    logit_scale: () learnable log-temperature; logits = exp(logit_scale) * cos(q_i, g_j).
    Returns the mean of cross-entropy query->gallery and gallery->query over the gathered
    (world_size * B) pairs, the diagonal being the positives; a scalar.
    """
    query = gather_features(F.normalize(query, dim=-1), rank, world_size)  # (W*B, D)
    gallery = gather_features(F.normalize(gallery, dim=-1), rank, world_size)  # (W*B, D)
    logits = logit_scale.exp() * query @ gallery.t()  # (W*B, W*B)
    targets = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
                  + F.cross_entropy(logits.t(), targets, label_smoothing=label_smoothing))


def id_loss(query: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor, classifier: nn.Module,
            label_smoothing: float = 0.1, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Identity (classification) loss: cross-entropy of ``classifier`` over the training players.

    query, gallery: (B, D) embeddings; labels: (B,) int64 class index of each pair's player in
    [0, num_classes). Both images of every pair are classified; a scalar (mean over 2 * W * B images).
    """
    features = torch.cat([gather_features(query, rank, world_size), gather_features(gallery, rank, world_size)])
    labels = gather_features(labels, rank, world_size).repeat(2)  # (2*W*B,)
    return F.cross_entropy(classifier(features), labels, label_smoothing=label_smoothing)


def triplet(query: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor, margin: float = 0.3,
            rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) over the 2 * W * B images of the batch.

    Distances are Euclidean (not squared) between L2-normalised embeddings, in [0, 2]. For every
    anchor: hardest positive = farthest image of the same label, hardest negative = closest image of
    another label; loss = mean(relu(d_pos - d_neg + margin)). labels: (B,) int64.
    """
    features = F.normalize(torch.cat([gather_features(query, rank, world_size),
                                      gather_features(gallery, rank, world_size)]), dim=-1)  # (N, D)
    labels = gather_features(labels, rank, world_size).repeat(2)  # (N,)
    # clamp before sqrt: the gradient of sqrt at 0 (self-distances) is infinite.
    dist = (2 - 2 * features @ features.t()).clamp_min(1e-12).sqrt()  # (N, N)
    same = labels[:, None] == labels[None, :]  # (N, N)
    hardest_positive = dist.masked_fill(~same, float("-inf")).amax(dim=1)  # (N,)
    hardest_negative = dist.masked_fill(same, float("inf")).amin(dim=1)  # (N,)
    return F.relu(hardest_positive - hardest_negative + margin).mean()


class ReidLoss(nn.Module):
    """A sum of loss terms chosen by name (``"infonce"``, ``"id+triplet"``, ...) with their parameters.

    Holds the learnable temperature (InfoNCE) and the classifier head (ID loss), so that they are
    trained, saved and (under DDP) synchronised together with the encoder. ``logit_scale_init``: the
    initial log-temperature (``INITIAL_LOGIT_SCALE`` = ln(1/0.07); a CLIP tower's own learned value
    to continue from it, as the published OpenClipModel did).
    """

    def __init__(self, name: str, embed_dim: int, num_classes: int = 0, label_smoothing: float = 0.1,
                 triplet_margin: float = 0.3, rank: int = 0, world_size: int = 1,
                 logit_scale_init: float = INITIAL_LOGIT_SCALE) -> None:
        super().__init__()
        self.terms = parse_loss_name(name)
        self.label_smoothing = label_smoothing
        self.triplet_margin = triplet_margin
        self.rank = rank
        self.world_size = world_size
        if "infonce" in self.terms:
            self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        if "id" in self.terms:
            if num_classes < 2:
                raise ValueError(f"the id loss needs at least 2 training players, got {num_classes}")
            self.classifier = nn.Linear(embed_dim, num_classes, bias=False)

    def forward(self, query: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """query, gallery: (B, D) embeddings; labels: (B,) class indices. Returns (total loss, {term: value})."""
        parts: dict[str, torch.Tensor] = {}
        if "infonce" in self.terms:
            parts["infonce"] = infonce(query, gallery, self.logit_scale, self.label_smoothing, self.rank, self.world_size)
        if "id" in self.terms:
            parts["id"] = id_loss(query, gallery, labels, self.classifier, self.label_smoothing, self.rank, self.world_size)
        if "triplet" in self.terms:
            parts["triplet"] = triplet(query, gallery, labels, self.triplet_margin, self.rank, self.world_size)
        total = torch.stack(list(parts.values())).sum()
        return total, {name: float(value.detach()) for name, value in parts.items()}


def parse_loss_name(name: str) -> tuple[str, ...]:
    """``"infonce+id"`` -> ``("infonce", "id")``; unknown or repeated terms raise ``ValueError``."""
    terms = tuple(term.strip() for term in name.split("+"))
    unknown = [term for term in terms if term not in LOSS_TERMS]
    if unknown or not terms or len(set(terms)) != len(terms):
        raise ValueError(f"loss {name!r}: expected terms from {LOSS_TERMS} joined by '+', each at most once")
    return terms
