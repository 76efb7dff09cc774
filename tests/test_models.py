"""Encoders: timm and open_clip towers, sizes, normalisation, pretrained weights from a local file."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from reid.config import TrainingConfig
from reid.models import ModelSpec, build_model, normalize_img_size


def test_timm_vit_embeds_each_image_at_the_requested_size():
    encoder = build_model({"model": "test_vit", "img_size": 32})
    out = encoder(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, encoder.embed_dim) == (3, 64)
    assert encoder.img_size == (32, 32)
    # mean/std from the model's pretrained config (test_vit: 0.5)
    assert encoder.mean == (0.5, 0.5, 0.5) and encoder.std == (0.5, 0.5, 0.5)


def test_timm_cnn_takes_height_and_width_and_configured_statistics():
    encoder = build_model({"model": "resnet18", "img_size": (64, 32), "mean": (0.1, 0.2, 0.3), "std": (1, 1, 1)})
    assert encoder(torch.randn(2, 3, 64, 32)).shape == (2, 512)
    assert encoder.img_size == (64, 32)
    assert encoder.mean == (0.1, 0.2, 0.3) and encoder.std == (1.0, 1.0, 1.0)


def test_timm_default_size_comes_from_the_model():
    assert build_model({"model": "test_vit"}).img_size == (160, 160)


def test_open_clip_visual_tower_without_text_and_projection():
    encoder = build_model({"model": "open_clip:ViT-S-32:openai", "pretrained": False, "img_size": 64})
    assert encoder.backbone.proj is None  # removed
    assert not any(key.startswith(("token_embedding", "ln_final", "transformer.resblocks.0.attn.in_proj_weight"))
                   for key in encoder.state_dict())  # no text tower (visual keys are under backbone.)
    assert all(key.startswith("backbone.") for key in encoder.state_dict())
    assert encoder(torch.randn(2, 3, 64, 64)).shape == (2, encoder.embed_dim) == (2, 384)
    assert encoder.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_open_clip_keeps_projection_and_checkpoints_gradients_on_request():
    encoder = build_model({"model": "open_clip:ViT-S-32:openai", "remove_proj": False, "grad_checkpointing": True,
                           "img_size": 64})
    assert encoder.backbone.proj is not None
    assert encoder.backbone.transformer.grad_checkpointing
    assert encoder.img_size == (64, 64)


def test_timm_gradient_checkpointing():
    encoder = build_model({"model": "test_vit", "img_size": 32, "grad_checkpointing": True})
    assert encoder.backbone.grad_checkpointing


def test_timm_pretrained_weights_from_a_local_file(tmp_path):
    source = timm.create_model("test_vit")  # as a hub file: with its 1000-class head
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    encoder = build_model({"model": "test_vit", "pretrained": True, "pretrained_file": path})
    assert torch.equal(encoder.backbone.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    random_init = build_model({"model": "test_vit"})
    assert not torch.equal(random_init.backbone.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_bad_specifications_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_model({"model": "test_vit", "pretrained": True, "pretrained_file": tmp_path / "missing.pth"})
    with pytest.raises(ValueError, match="open_clip:<name>:<pretrained tag>"):
        build_model({"model": "open_clip:ViT-S-32"})
    with pytest.raises(ValueError, match="img_size"):
        normalize_img_size((1, 2, 3))
    with pytest.raises(ValueError, match="mean"):
        build_model({"model": "test_vit", "img_size": 32, "mean": (0.5, 0.5)})


def test_spec_reads_training_configurations_strictly_and_checkpoint_dicts():
    spec = ModelSpec.from_config(TrainingConfig(model="resnet18", img_size=(64,), lr=0.1))
    assert spec.model == "resnet18" and spec.img_size == (64,) and spec.remove_proj is True
    assert normalize_img_size(spec.img_size) == (64, 64)

    class Renamed:  # a configuration whose field was renamed: an error, not a silent default
        model = "resnet18"
        image_size = (64,)

    with pytest.raises(AttributeError, match="pretrained"):
        ModelSpec.from_config(Renamed())
    saved = {"model": "resnet18", "img_size": [64], "lr": 0.1}  # a checkpoint's dict: the model's keys, others ignored
    assert ModelSpec.from_config(saved) == ModelSpec(model="resnet18", img_size=[64])


def activations(encoder) -> set[str]:
    return {type(module).__name__ for module in encoder.modules() if "GELU" in type(module).__name__}


def test_openai_tags_build_quick_gelu_towers_without_weights():
    # OpenAI's CLIP was trained with QuickGELU; open_clip >= 2.21 builds "ViT-B-32" with plain GELU
    # unless told, and the published code (open_clip 2.20, load_openai_model) ran QuickGELU.
    assert activations(build_model({"model": "open_clip:ViT-B-32:openai", "img_size": 32})) == {"QuickGELU"}
    assert activations(build_model({"model": "open_clip:ViT-S-32:none", "img_size": 32})) == {"GELU"}


def test_open_clip_pretrained_weights_from_a_local_file_with_the_tag_activation(tmp_path, monkeypatch):
    import open_clip

    # A tiny model under a tag registered as QuickGELU-trained, in open_clip's own pretrained registry.
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "ViT-S-32",
                        {"quickgelu_test": {"quick_gelu": True, "mean": (0.5,) * 3, "std": (0.5,) * 3}})
    source = open_clip.create_model("ViT-S-32", force_quick_gelu=True)
    with torch.no_grad():
        source.logit_scale.fill_(4.6052)  # a trained CLIP's ln 100
    path = tmp_path / "clip.pth"
    torch.save(source.state_dict(), path)
    encoder = build_model({"model": "open_clip:ViT-S-32:quickgelu_test", "pretrained": True, "pretrained_file": path})
    assert activations(encoder) == {"QuickGELU"}
    assert torch.equal(encoder.backbone.conv1.weight, source.visual.conv1.weight)
    assert encoder.logit_scale == pytest.approx(4.6052)  # the model's own temperature, for the InfoNCE start


def test_the_model_own_logit_scale_is_none_for_timm_and_clip_init_for_random_open_clip():
    assert build_model({"model": "test_vit", "img_size": 32}).logit_scale is None
    random_clip = build_model({"model": "open_clip:ViT-S-32:none", "img_size": 32})
    assert random_clip.logit_scale == pytest.approx(math.log(1 / 0.07))
