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
from pathlib import Path
from typing import Literal

from reid.data import PackingName
from reid.engine import Precision, ScheduleName
from reid.errors import run_script
from reid.losses import LossName
from reid.training import parse_training_config, run


@dataclass
class Configuration:
    """Training configuration (the paper's recipe for ViTs)."""

    # ---- model
    model: str = "eva_large_patch14_336.in22k_ft_in22k_in1k"
    """timm model name, or open_clip:<name>:<pretrained tag> (e.g. open_clip:ViT-L-14:openai)."""
    pretrained: bool = True
    """Start from pretrained weights (from pretrained_file, else downloaded by name); --no-pretrained = random init."""
    pretrained_file: Path | None = None
    """Local pretrained weights (for machines without internet): timm's weights file or open_clip's checkpoint."""
    img_size: tuple[int, ...] | None = None
    """Input size: one int (square) or height and width; None = the model's own (EVA-L/336: 336)."""
    mean: tuple[float, float, float] | None = None
    """Per-channel mean for normalisation; None = the model's own (the published script used ImageNet's for timm)."""
    std: tuple[float, float, float] | None = None
    """Per-channel std for normalisation; None = the model's own."""
    remove_proj: bool = True
    """open_clip ViTs: drop the final projection (the embedding is the tower's width)."""
    grad_checkpointing: bool = False
    """Recompute activations in the backward pass: less GPU memory, slower."""

    # ---- data
    data_dir: Path = Path("data")
    """Folder that holds data_reid/ (train_df.csv from preprocess_data.py, images)."""
    fold: int = -1
    """-1: train on the train split, evaluate on the test split; k >= 0: hold out cross-validation fold k."""
    train_on_all: bool = False
    """Train on train + test (the held-out scores are then not an unbiased estimate)."""
    prob_flip: float = 0.5
    """Probability of flipping both images of a pair horizontally."""
    num_workers: int = 4
    """Data-loading processes per training process (0 = load in the main process)."""

    # ---- loss
    loss: LossName = "infonce"
    """Loss terms, summed: infonce (the paper's), id (cross-entropy over training players), triplet (batch-hard)."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropies (InfoNCE and ID)."""
    triplet_margin: float = 0.3
    """Margin of the triplet loss (Euclidean distance between L2-normalised embeddings)."""
    logit_scale_init: float | Literal["model"] = "model"
    """Initial InfoNCE log-temperature: model = the encoder's own (open_clip: CLIP's learned one, ln 100 for OpenAI's; timm: ln(1/0.07)), as published; or a number."""

    # ---- optimisation
    epochs: int = 8
    """Epochs to train."""
    batch_size: int = 32
    """Pairs per batch, all distinct players: per GPU (the global batch is batch_size x GPUs), or in all with --batch-scope total."""
    batch_scope: Literal["per_gpu", "total"] = "per_gpu"
    """per_gpu: batch_size pairs on every GPU; total: batch_size pairs per step split over the GPUs (the published DataParallel script)."""
    batch_packing: PackingName = "requeue"
    """Filling batches of distinct players: requeue (published: a repeated player goes to the back of the queue) or carry (it waits for the next batch; fewer images left out at large batches)."""
    lr: float = 4e-5
    """Peak learning rate of AdamW (4e-5 for ViTs, 4e-4 for CNNs)."""
    weight_decay: float = 0.01
    """AdamW weight decay (torch's default, as the published script)."""
    scheduler: ScheduleName = "polynomial"
    """Learning-rate schedule after the warm-up."""
    warmup_epochs: float = 1.0
    """Epochs of linear warm-up from 0 to lr."""
    lr_end: float = 1e-5
    """Final learning rate of the polynomial (power 2) schedule."""
    gradient_clipping: float | None = None
    """Clip the gradients' L2 norm to this value; None = no clipping."""
    gradient_accumulation: int = 1
    """Batches per optimiser step (InfoNCE negatives still come from one batch)."""
    mixed_precision: Precision = "bf16"
    """Training precision on GPUs: bf16 autocast (fp16 + gradient scaler on GPUs without bf16); fp16 = the published recipe (fp16 autocast, gradient scaler, loss under autocast); fp32 = no autocast. CPU: fp32."""
    fast_kernels: bool = False
    """GPUs: autotuned cuDNN kernels and TF32 matmuls (faster, not bit-reproducible); off = the published run's deterministic cuDNN and fp32 matmuls."""
    seed: int = 1
    """Seed of the data order, augmentations and initialisation (each process adds its rank)."""

    # ---- evaluation (on the held-out split, before training and after every epoch)
    zero_shot: bool = False
    """Evaluate before the first epoch (row epoch 0 of metrics.csv); off by default, as published."""
    eval_precision: Precision = "fp32"
    """Precision of the feature extraction on GPUs: fp32 (as the published evaluator), bf16 or fp16 autocast."""
    rerank: bool = True
    """Also score the classic and the hard-weight k-reciprocal re-ranking."""
    k1: int = 20
    """Re-ranking: size of the k-reciprocal neighbourhoods."""
    k2: int = 6
    """Re-ranking: neighbours averaged in the local query expansion."""
    lambda_value: float = 0.7
    """Re-ranking: weight of the Jaccard distance (both re-rankings, as the published script)."""
    best_metric: Literal["map_raw", "map_classic", "map_hard"] = "map_hard"
    """Score that selects best.pth."""
    flip_test: bool = False
    """Test-time augmentation: add the embedding of the mirrored image."""
    batch_size_eval: int = 64
    """Images per batch when extracting features."""

    # ---- run
    model_path: Path = Path("model")
    """Output root; the run writes into model_path/run_name/."""
    run_name: str | None = None
    """Run folder name; None = <model>_<fold>_seed<seed>_<date-time>."""
    resume: Path | None = None
    """last.pth of a run to continue in its folder. Its configuration is the default; flags given beside it take
    effect (lr, epochs, evaluation, ...) or are refused when they cannot (model, image size, batch size, ...)."""
    overwrite: bool = False
    """Replace the run already in model_path/run_name (without it, an existing run folder is refused)."""
    device: str = "auto"
    """auto (one GPU per process if any, else CPU), cpu, cuda, cuda:1, ..."""
    tensorboard: bool = False
    """Also log to TensorBoard in model_path/run_name/tensorboard/: loss, lr, temperature per step, scores per epoch (needs the tensorboard package)."""
    verbose: bool = True
    """Progress bars."""


def main(config: Configuration) -> None:
    run(config)


if __name__ == "__main__":
    run_script(main, partial(parse_training_config, Configuration))
