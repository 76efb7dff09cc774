"""Image encoders: any timm model or an open_clip visual tower, one embedding per image.

``build_model(config)`` reads these fields of a ``ModelSpec``, of a ``reid.config.TrainingConfig``
(attributes, read strictly: a field it lacks is an error) or of a checkpoint's configuration dict
(keys; a missing one takes the ``ModelSpec`` default):

- ``model``: a timm name (``eva_large_patch14_336.in22k_ft_in22k_in1k``, ``resnet50``) or
  ``open_clip:<name>:<pretrained tag>`` (``open_clip:ViT-L-14:openai``);
- ``pretrained`` (bool): load the pretrained weights: from ``pretrained_file`` when set (a local file,
  for machines without internet: timm's weights file, or open_clip's full CLIP checkpoint), else from
  the hub by name; False = random initialisation;
- ``img_size``: None (the model's own), one int (square) or (height, width);
- ``mean`` / ``std``: None (the model's own normalisation) or three floats;
- ``remove_proj`` (open_clip ViTs): drop the final projection, the embedding is the tower's width;
- ``grad_checkpointing``: trade compute for memory (timm and open_clip transformers).

open_clip towers take the activation their pretrained tag was trained with (QuickGELU for OpenAI's
CLIP weights, as the published code's open_clip 2.20 built them), with or without the weights.

The published code saved ``weights_e{n}.pth``: the state dict of its ``TimmModel`` (keys ``model.<timm
key>``) or ``OpenClipModel`` (keys ``model.visual.<tower key>``), both with ``model.logit_scale``.
``published_encoder_weights`` maps such a file onto an ``Encoder``'s keys.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reid.config import TrainingConfig
from reid.errors import InputError

OPEN_CLIP_PREFIX = "open_clip:"


@dataclass
class ModelSpec:
    """Everything needed to rebuild an encoder (see the module docstring for each field)."""

    model: str
    pretrained: bool = False
    pretrained_file: Path | None = None
    img_size: tuple[int, ...] | int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    remove_proj: bool = True
    grad_checkpointing: bool = False

    @classmethod
    def from_config(cls, config: TrainingConfig | Mapping[str, Any]) -> ModelSpec:
        """The spec's fields of a training configuration (each attribute must exist) or of a plain dict
        such as a checkpoint's configuration (``model`` required, other missing keys -> the defaults)."""
        names = [f.name for f in dataclasses.fields(cls)]
        if isinstance(config, Mapping):
            if not config.get("model"):
                raise InputError("the model's configuration names no model")
            return cls(**{name: config[name] for name in names if name in config})
        return cls(**{name: getattr(config, name) for name in names})


class Encoder(nn.Module):
    """An image backbone that maps (B, 3, H, W) normalised images to (B, embed_dim) embeddings.

    Attributes: ``embed_dim``; ``img_size`` (height, width) the images must have; ``mean`` and ``std``
    (per channel, for pixel values in [0, 1]) they must be normalised with; ``logit_scale``: the
    tower's own learned InfoNCE log-temperature (open_clip's CLIP) or None (timm).
    """

    def __init__(self, backbone: nn.Module, embed_dim: int, img_size: tuple[int, int],
                 mean: tuple[float, float, float], std: tuple[float, float, float],
                 logit_scale: float | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.embed_dim = embed_dim
        self.img_size = img_size
        self.mean = mean
        self.std = std
        self.logit_scale = logit_scale  # a float, not a parameter: the loss owns the trained one

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) float -> (B, embed_dim) embeddings (not normalised)."""
        return self.backbone(images)


def build_model(config: ModelSpec | TrainingConfig | Mapping[str, Any]) -> Encoder:
    """Build the encoder described by ``config`` (see the module docstring)."""
    spec = config if isinstance(config, ModelSpec) else ModelSpec.from_config(config)
    if spec.pretrained_file is not None and not Path(spec.pretrained_file).is_file():
        raise FileNotFoundError(f"pretrained_file {spec.pretrained_file} does not exist")
    check_model_name(spec.model)
    if spec.model.startswith(OPEN_CLIP_PREFIX):
        return _build_open_clip(spec)
    return _build_timm(spec)


def check_model_name(model: str) -> None:
    """``InputError`` for a name that neither timm nor open_clip knows, with the closest known names."""
    if model.startswith(OPEN_CLIP_PREFIX):
        import open_clip

        name = model[len(OPEN_CLIP_PREFIX):].split(":")[0]
        known, how = open_clip.list_models(), "open_clip.list_models()"
    else:
        import timm

        if timm.is_model(model):
            return
        name, known, how = model.split(".")[0], timm.list_models(), "timm.list_models()"
    if name in known:
        return
    close = " or ".join(repr(n) for n in difflib.get_close_matches(name, known, n=3))
    raise InputError(f"unknown model {model!r}{f' (did you mean {close}?)' if close else ''}; "
                     f"the known names are in {how}")


def normalize_img_size(img_size: tuple[int, ...] | list[int] | int | None) -> tuple[int, int] | None:
    """None -> None; 224 or (224,) -> (224, 224); (256, 128) -> (256, 128) as (height, width)."""
    if img_size is None:
        return None
    sizes = (img_size,) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise ValueError(f"img_size must be one positive int or (height, width), got {img_size!r}")
    return (sizes[0], sizes[0]) if len(sizes) == 1 else sizes  # type: ignore[return-value]


def _triple(values: tuple[float, ...] | list[float] | None, name: str) -> tuple[float, float, float] | None:
    if values is None:
        return None
    if len(values) != 3:
        raise ValueError(f"{name} needs 3 values (one per RGB channel), got {values!r}")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def _build_timm(spec: ModelSpec) -> Encoder:
    import timm

    img_size = normalize_img_size(spec.img_size)
    kwargs: dict[str, Any] = {"num_classes": 0}  # num_classes=0: the pooled features, no classifier
    pretrained_cfg = timm.get_pretrained_cfg(spec.model)
    # Transformers with a fixed token grid must be built at the input size (pretrained position
    # embeddings are resampled); CNNs take any size and reject the argument.
    if img_size is not None and pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
        kwargs["img_size"] = img_size
    if spec.pretrained and spec.pretrained_file is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(spec.pretrained_file)}
    backbone = timm.create_model(spec.model, pretrained=spec.pretrained, **kwargs)
    if spec.grad_checkpointing:
        backbone.set_grad_checkpointing(True)
    data_cfg = backbone.pretrained_cfg
    default_size = tuple(data_cfg.get("input_size", (3, 224, 224))[1:])
    return Encoder(backbone, embed_dim=backbone.num_features, img_size=img_size or default_size,
                   mean=_triple(spec.mean, "mean") or tuple(data_cfg.get("mean", (0.485, 0.456, 0.406))),
                   std=_triple(spec.std, "std") or tuple(data_cfg.get("std", (0.229, 0.224, 0.225))))


def _build_open_clip(spec: ModelSpec) -> Encoder:
    import open_clip

    parts = spec.model[len(OPEN_CLIP_PREFIX):].split(":")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"open_clip models are written open_clip:<name>:<pretrained tag>, got {spec.model!r}")
    name, tag = parts
    img_size = normalize_img_size(spec.img_size)
    kwargs: dict[str, Any] = {"force_image_size": img_size} if img_size is not None else {}
    # The tag decides the activation, whether the weights come from the hub, a file or nowhere:
    # open_clip >= 2.21 builds "ViT-L-14" with GELU even for OpenAI's QuickGELU weights.
    if uses_quick_gelu(name, tag):
        kwargs["force_quick_gelu"] = True
    pretrained = None
    if spec.pretrained:
        pretrained = str(spec.pretrained_file) if spec.pretrained_file is not None else tag
    clip = open_clip.create_model(name, pretrained=pretrained, **kwargs)
    visual = clip.visual
    logit_scale = float(clip.logit_scale.detach()) if isinstance(getattr(clip, "logit_scale", None), torch.Tensor) else None
    del clip  # the text tower is not needed
    if spec.remove_proj and getattr(visual, "proj", None) is not None and "ViT" in name:
        visual.proj = None
    if spec.grad_checkpointing:
        visual.set_grad_checkpointing(True)
    embed_dim = _output_dim(visual, img_size or _pair(visual.image_size))
    preprocess = getattr(visual, "preprocess_cfg", {}) or {}
    return Encoder(visual, embed_dim=embed_dim, img_size=img_size or _pair(visual.image_size),
                   mean=_triple(spec.mean, "mean") or tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                   std=_triple(spec.std, "std") or tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD)),
                   logit_scale=logit_scale)


def uses_quick_gelu(name: str, tag: str) -> bool:
    """Whether open_clip's pretrained tag ``tag`` of model ``name`` was trained with QuickGELU (e.g. ``openai``)."""
    import open_clip

    return bool(open_clip.get_pretrained_cfg(name, tag).get("quick_gelu", False))


def is_open_clip(model: str) -> bool:
    """Whether a model name is an open_clip one (``open_clip:<name>:<tag>``) rather than a timm one."""
    return model.startswith(OPEN_CLIP_PREFIX)


# ---------------------------------------------------------------- the published checkpoint layout

PUBLISHED_PREFIX = "model."
PUBLISHED_OPEN_CLIP_PREFIX = "model.visual."
PUBLISHED_LOGIT_SCALE = "model.logit_scale"


def is_published_layout(state: Mapping[str, Any]) -> bool:
    """Whether a loaded file is a published ``weights_e{n}.pth``: a flat state dict of tensors whose keys
    all start with ``model.`` (or ``module.model.``, saved from DataParallel)."""
    keys = [_strip_data_parallel(key) for key in state]
    return bool(keys) and all(isinstance(key, str) and key.startswith(PUBLISHED_PREFIX) for key in keys) and all(
        isinstance(value, torch.Tensor) for value in state.values())


def published_encoder_weights(state: Mapping[str, torch.Tensor], model: str) -> dict[str, torch.Tensor]:
    """A published state dict -> the ``Encoder`` state dict.

    timm (``TimmModel``): ``model.<key>`` -> ``backbone.<key>``; open_clip (``OpenClipModel``, text tower
    deleted): ``model.visual.<key>`` -> ``backbone.<key>``. ``model.logit_scale`` is the loss's
    temperature, not part of the encoder: left out. Keys of neither form are kept unmapped so that
    loading reports them as unexpected.
    """
    prefix = PUBLISHED_OPEN_CLIP_PREFIX if is_open_clip(model) else PUBLISHED_PREFIX
    weights: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = _strip_data_parallel(key)
        if key == PUBLISHED_LOGIT_SCALE:  # before the prefix test: it starts with model. too
            continue
        weights["backbone." + key[len(prefix):] if key.startswith(prefix) else key] = value
    return weights


def _strip_data_parallel(key: Any) -> Any:
    return key[len("module."):] if isinstance(key, str) and key.startswith("module.") else key


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _output_dim(visual: nn.Module, img_size: tuple[int, int]) -> int:
    proj = getattr(visual, "proj", "missing")
    if isinstance(proj, torch.Tensor):
        return int(proj.shape[1])
    if proj is None and hasattr(visual, "transformer"):
        return int(visual.transformer.width)
    if getattr(visual, "output_dim", None):
        return int(visual.output_dim)
    with torch.no_grad():  # other towers: measure
        was_training = visual.training
        visual.eval()
        dim = int(visual(torch.zeros(1, 3, *img_size)).shape[-1])
        visual.train(was_training)
        return dim
