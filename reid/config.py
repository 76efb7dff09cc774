"""Configuration dataclasses <-> command line and JSON; the typed training configuration; re-ranking settings.

Every stage script starts with ``@dataclass class Configuration`` whose fields carry a docstring each;
``parse(Configuration)`` turns the command line into an instance with `tyro`_ (flags are the field
names with ``-`` for ``_``; ``--help`` shows the field docstrings, types and defaults, inherited ones
included; booleans get ``--flag`` / ``--no-flag``; ``Literal`` choices are checked). ``--config
path.json`` loads a saved configuration first, and flags given beside it win.

``TrainingConfig`` is the contract between the training scripts and ``reid.training.run``: every
field a run reads, its type, default (the paper's recipe for ViTs) and meaning. The scripts'
``Configuration`` subclass it and may only give its fields other defaults (a new or misspelt field
is a ``TypeError`` when the class is made). ``RerankSettings`` holds the re-rankings' settings and
their one set of defaults (the published pipeline's: k1 20, k2 6, lambda 0.7).

.. _tyro: https://brentyi.github.io/tyro/
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import tyro

from reid.errors import InputError
from reid.files import write_text_atomically

T = TypeVar("T")

CONFIG_FLAG = "--config"


class ConfigError(InputError):
    """A saved configuration does not fit the dataclass (unknown field, wrong type)."""


def parse(config_class: type[T], args: Sequence[str] | None = None, description: str | None = None,
          default: T | None = None) -> T:
    """Build ``config_class`` from the command line.

    args: the command-line words (default ``sys.argv[1:]``). ``--config PATH`` (or ``--config=PATH``)
    anywhere among them loads that JSON as the defaults; the other flags override it.
    description: text at the top of ``--help``; by default the calling script's module docstring.
    default: an instance whose values are the defaults (``--config`` replaces it), e.g. a checkpoint's configuration.
    On a bad flag or value, prints a message naming the flag and what was expected, and exits 2.
    """
    args = list(sys.argv[1:] if args is None else args)
    config_path, args = _pop_config_flag(args)
    if config_path is not None:
        try:
            default = load_config(config_class, config_path)
        except (OSError, ConfigError, json.JSONDecodeError) as error:
            print(f"error: {CONFIG_FLAG} {config_path}: {error}", file=sys.stderr)
            raise SystemExit(2) from None
    if description is None:
        description = _caller_docstring() or inspect.getdoc(config_class)
    # tyro would otherwise show the class name and a usage line built from sys.argv[0].
    return tyro.cli(config_class, args=args, default=default, description=description)


def _pop_config_flag(args: list[str]) -> tuple[Path | None, list[str]]:
    rest: list[str] = []
    path: Path | None = None
    i = 0
    while i < len(args):
        word = args[i]
        if word == CONFIG_FLAG:
            if i + 1 >= len(args):
                print(f"error: {CONFIG_FLAG} expects a path to a JSON file", file=sys.stderr)
                raise SystemExit(2)
            path = Path(args[i + 1])
            i += 2
            continue
        if word.startswith(CONFIG_FLAG + "="):
            path = Path(word.split("=", 1)[1])
        else:
            rest.append(word)
        i += 1
    return path, rest


def _caller_docstring() -> str | None:
    # The script that called parse() is the __main__ module, whose docstring holds its example commands.
    main = sys.modules.get("__main__")
    return getattr(main, "__doc__", None)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass instance -> plain JSON-able dict (Path -> str, tuple -> list), recursively."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return {f.name: _to_plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


def save_config(config: Any, path: str | os.PathLike) -> Path:
    """Write the resolved configuration as indented JSON, atomically (the parent folder is created)."""
    return write_text_atomically(path, json.dumps(config_to_dict(config), indent=2) + "\n")


def config_from_dict(config_class: type[T], values: dict[str, Any], strict: bool = True) -> T:
    """Plain dict (as written by ``config_to_dict``) -> ``config_class`` instance.

    Values are converted to the field types (str -> Path, list -> tuple, ...). ``strict``: an unknown
    key raises ``ConfigError``; otherwise unknown keys are ignored (e.g. a checkpoint written by a
    script with more fields). Missing keys keep the class defaults.
    """
    hints = typing.get_type_hints(config_class)
    names = {f.name for f in dataclasses.fields(config_class) if f.init}
    unknown = sorted(set(values) - names)
    if unknown and strict:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)}; {config_class.__name__} has: {', '.join(sorted(names))}")
    kwargs = {}
    for name in names & set(values):
        try:
            kwargs[name] = _coerce(values[name], hints[name])
        except (TypeError, ValueError) as error:
            raise ConfigError(f"field {name!r}: {error}") from None
    return config_class(**kwargs)


def load_config(config_class: type[T], path: str | os.PathLike, strict: bool = True) -> T:
    """Read a JSON written by ``save_config`` back into ``config_class``."""
    values = json.loads(Path(path).read_text())
    if not isinstance(values, dict):
        raise ConfigError(f"expected a JSON object, got {type(values).__name__}")
    return config_from_dict(config_class, values, strict=strict)


def _coerce(value: Any, hint: Any) -> Any:
    """Convert a JSON value to the annotated type (enough for the types our configurations use)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError) as error:
                errors.append(str(error))
        raise ValueError(f"{value!r} fits none of {hint}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{value!r} is not one of {args}")
        return value
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner) for v in value]
        return tuple(items) if (origin is tuple or hint is tuple) else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {value!r}")
        return dict(value)
    if hint is Path or (isinstance(hint, type) and issubclass(hint, os.PathLike)):
        if not isinstance(value, str):
            raise TypeError(f"expected a path string, got {value!r}")
        return Path(value)
    if hint in _SCALARS:
        accepted, expected = _SCALARS[hint]
        if not isinstance(value, accepted) or (isinstance(value, bool) and hint is not bool):  # JSON true is no number
            raise TypeError(f"expected {expected}, got {value!r}")
        return float(value) if hint is float else value
    return value


# JSON scalar types a field of each type accepts, and how an error names it.
_SCALARS: dict[type, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"), int: ((int,), "an integer"), float: ((int, float), "a number"), str: ((str,), "a string"),
}


# ---------------------------------------------------------------- re-ranking settings

@dataclass(frozen=True)
class RerankSettings:
    """The k-reciprocal re-rankings' settings; the defaults are the published pipeline's (its predict.py and
    training log: k1 20, k2 6, lambda 0.7 for both variants). Every stage script and the per-epoch
    evaluation use these unless told otherwise. (The classic variant's function with the published
    ``re_ranking`` signature, ``reid.retrieval.rerank.classic``, keeps that signature's lambda 0.3.)"""

    k1: int = 20
    """Size of the k-reciprocal neighbourhoods."""
    k2: int = 6
    """Neighbours averaged in the local query expansion (1 <= k2 <= k1)."""
    lambda_value: float = 0.7
    """Weight of the Jaccard distance; 1 - lambda weights the original distance (torchreid's lambda is 1 - this)."""
    expansion_threshold: float = 2 / 3
    """Hard-weight variant: a candidate's half set merges when at least this share of it is in the set."""

    def __post_init__(self) -> None:
        if self.k1 < 1 or not 1 <= self.k2 <= self.k1:
            raise InputError(f"re-ranking needs --k1 >= 1 and 1 <= --k2 <= --k1, got k1={self.k1}, k2={self.k2}")

    def replaced(self, k1: int | None = None, k2: int | None = None, lambda_value: float | None = None) -> RerankSettings:
        """These settings with the values given (None keeps a value): a stage's ``--k1`` / ``--k2`` /
        ``--lambda-value`` over a checkpoint's training settings."""
        given = {"k1": k1, "k2": k2, "lambda_value": lambda_value}
        return dataclasses.replace(self, **{name: value for name, value in given.items() if value is not None})

    def fitted(self, num_query: int, num_gallery: int, variant: str) -> tuple[RerankSettings, str | None]:
        """These settings shrunk to what the set sizes allow, and a note saying so (None when unchanged).

        The one rule for every caller (the stage scripts, the per-epoch evaluation, the clustering):
        the ``classic`` variant's neighbour lists hold k1 + 1 of all ``num_query + num_gallery`` images,
        the ``hard_weight`` variant's k1 gallery images, and the query expansion k2 <= k1 of them.
        """
        largest = num_gallery if variant == "hard_weight" else num_query + num_gallery - 1
        k1 = max(1, min(self.k1, largest))
        k2 = max(1, min(self.k2, k1))
        if (k1, k2) == (self.k1, self.k2):
            return self, None
        return dataclasses.replace(self, k1=k1, k2=k2), (
            f"{variant} re-ranking with k1={k1}, k2={k2} instead of k1={self.k1}, k2={self.k2}: only {num_query} "
            f"queries and {num_gallery} gallery images")


# ---------------------------------------------------------------- the training configuration

Precision = Literal["bf16", "fp16", "fp32"]
ScheduleName = Literal["polynomial", "cosine", "linear", "constant"]
PackingName = Literal["requeue", "carry"]
LossName = Literal["infonce", "id", "triplet", "infonce+id", "infonce+triplet", "id+triplet", "infonce+id+triplet"]


@dataclass
class TrainingConfig:
    """Training configuration: every field ``reid.training.run`` reads (defaults: the paper's recipe for ViTs)."""

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
    """Initial InfoNCE log-temperature: model = the encoder's own (open_clip: CLIP's learned one, ln 100 for OpenAI's;
    timm: ln(1/0.07)), as published; or a number."""

    # ---- optimisation
    epochs: int = 8
    """Epochs to train."""
    batch_size: int = 32
    """Pairs per batch, all distinct players: per GPU (the global batch is batch_size x GPUs), or in all with --batch-scope total."""
    batch_scope: Literal["per_gpu", "total"] = "per_gpu"
    """per_gpu: batch_size pairs on every GPU; total: batch_size pairs per step split over the GPUs (the published DataParallel script)."""
    batch_packing: PackingName = "requeue"
    """Filling batches of distinct players: requeue (published: a repeated player goes to the back of the queue) or
    carry (it waits for the next batch; fewer images left out at large batches)."""
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
    """Training precision on GPUs: bf16 autocast (fp16 + gradient scaler on GPUs without bf16); fp16 = the published
    recipe (fp16 autocast, gradient scaler, loss under autocast); fp32 = no autocast. CPU: fp32."""
    fast_kernels: bool = False
    """GPUs: autotuned cuDNN kernels and TF32 matmuls (faster, not bit-reproducible); off = the published run's
    deterministic cuDNN and fp32 matmuls."""
    seed: int = 1
    """Seed of the data order, augmentations and initialisation (each process adds its rank)."""

    # ---- evaluation (on the held-out split, before training and after every epoch)
    zero_shot: bool = False
    """Evaluate before the first epoch (row epoch 0 of metrics.csv); off by default, as published."""
    eval_precision: Precision = "fp32"
    """Precision of the feature extraction on GPUs: fp32 (as the published evaluator), bf16 or fp16 autocast."""
    rerank: bool = True
    """Also score the classic and the hard-weight k-reciprocal re-ranking (on the GPU when training runs on one)."""
    k1: int = RerankSettings.k1
    """Re-ranking: size of the k-reciprocal neighbourhoods."""
    k2: int = RerankSettings.k2
    """Re-ranking: neighbours averaged in the local query expansion."""
    lambda_value: float = RerankSettings.lambda_value
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
    """Also log to TensorBoard in model_path/run_name/tensorboard/: loss, lr, temperature per step, scores per epoch
    (needs the tensorboard package)."""
    verbose: bool = True
    """Progress bars."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A script's Configuration gives fields other defaults; a field run() does not know would be ignored.
        super().__init_subclass__(**kwargs)
        unknown = [name for name in inspect.get_annotations(cls) if name not in TrainingConfig.__dataclass_fields__]
        if unknown:
            raise TypeError(f"{cls.__qualname__}: {', '.join(unknown)} not field(s) of reid.config.TrainingConfig; "
                            "a training script's Configuration may only give its fields other defaults")

    @property
    def rerank_settings(self) -> RerankSettings:
        """The per-epoch re-rankings' settings (``k1``, ``k2``, ``lambda_value``)."""
        return RerankSettings(k1=self.k1, k2=self.k2, lambda_value=self.lambda_value)

    @property
    def held_out_split(self) -> str:
        """The split the run evaluates on: ``test``, or ``fold<k>`` (``reid.layout.held_out_split``)."""
        from reid.layout import held_out_split

        return held_out_split(self.fold, self.train_on_all)

    @classmethod
    def from_checkpoint(cls, values: dict[str, Any], source: str | os.PathLike = "checkpoint") -> TrainingConfig:
        """The configuration a checkpoint carries (a plain dict); fields it lacks (a published
        ``weights_e<n>.pth`` names only its model) take the defaults, fields this version does not know are
        left out. A value of the wrong type raises ``InputError`` naming ``source``."""
        try:
            return config_from_dict(cls, values, strict=False)
        except ConfigError as error:
            raise InputError(f"{source}: its training configuration does not fit this version ({error})") from None
