"""Fine-tune an image encoder for player re-identification with the paper's recipe (InfoNCE over pairs).

Examples:
    python train_our_post.py                                              # EVA-L/336, the paper's settings
    python train_our_post.py --model open_clip:ViT-L-14:openai --batch-size 32
    python train_our_post.py --model test_vit --no-pretrained --img-size 32 --epochs 2 --device cpu   # seconds on a CPU
    torchrun --nproc_per_node 4 train_our_post.py --batch-size 32         # 4 GPUs, 4 x 32 pairs per step
    python train_our_post.py --resume model/<run>/last.pth --epochs 12   # continue (or lengthen) a run
    python train_our_post.py --run-name try1 --overwrite                 # replace the run in model/try1/

Outputs in model_path/run_name/: config.json, log.txt, metrics.csv, curves.png, last.pth, best.pth
(and tensorboard/ with --tensorboard: tensorboard --logdir model/).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from reid.config import TrainingConfig
from reid.errors import run_script
from reid.training import parse_training_config, run


@dataclass
class Configuration(TrainingConfig):
    """Training configuration: the paper's recipe for ViTs.

    Every field, its default and its meaning are in reid.config.TrainingConfig (``--help`` lists them);
    a field declared here gets another default (the same name and type, as train_our_post_resnet.py does).
    """


def main(config: Configuration) -> None:
    run(config)


if __name__ == "__main__":
    run_script(main, partial(parse_training_config, Configuration))
