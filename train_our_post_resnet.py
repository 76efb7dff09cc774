"""Train with the ResNet-50 recipe of the paper's CNN study: same engine as train_our_post.py, other defaults.

Examples:
    python train_our_post_resnet.py                                       # timm resnet50, lr 4e-4, 50 epochs, batch 64
    python train_our_post_resnet.py --loss id+triplet                     # the loss study
    torchrun --nproc_per_node 2 train_our_post_resnet.py --batch-size 32

Every field is described in reid.config.TrainingConfig (--help lists them); only the defaults below differ
from train_our_post.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from reid.config import TrainingConfig
from reid.errors import run_script
from reid.training import parse_training_config, run


@dataclass
class Configuration(TrainingConfig):
    """Training configuration (the paper's recipe for ResNet-50)."""

    model: str = "resnet50"
    """timm model name, or open_clip:<name>:<pretrained tag>; timm's ResNet-50 here (the paper's CNN study)."""
    pretrained: bool = False
    """Start from pretrained weights; off by default, as the published ResNet script (trained from scratch)."""
    epochs: int = 50
    """Epochs to train (50 in the published ResNet script)."""
    batch_size: int = 64
    """Pairs per batch and per process, all distinct players (64 in the published ResNet script)."""
    lr: float = 4e-4
    """Peak learning rate of AdamW (4e-4 for CNNs)."""
    prob_flip: float = 0.0
    """Probability of flipping both images of a pair horizontally (none in the ResNet recipe)."""


def main(config: Configuration) -> None:
    run(config)


if __name__ == "__main__":
    run_script(main, partial(parse_training_config, Configuration))
