"""--pretrained by model name, through the real download path of timm and open_clip, without network.

On a user's machine ``build_model({"model": name, "pretrained": True})`` makes timm / open_clip fetch
the weights from the Hugging Face hub into its cache. Here the test writes weights into a local hub
cache in the layout the hub client keeps (``models--<org>--<name>/{blobs,refs,snapshots}``), turns
the hub client offline and builds the models by their real names in a fresh process (the hub client
reads its environment when imported). The loaded weights must be the ones written.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
TIMM_NAME = "test_vit.r160_in1k"  # hub repository timm/test_vit.r160_in1k
CLIP_NAME, CLIP_TAG = "ViTamin-S", "datacomp1b"  # the smallest open_clip model with a pretrained tag (62 M parameters)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_to_hub_cache(cache: Path, repo_id: str, filename: str, tensors: dict[str, torch.Tensor]) -> None:
    """Put ``filename`` of hub repository ``repo_id`` (branch main) into the hub cache at ``cache``:
    the file as a blob named by its sha256, a snapshot link to it, and refs/main naming the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    staging = repo / "staging.safetensors"
    repo.mkdir(parents=True)
    save_file({key: value.contiguous() for key, value in tensors.items()}, staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    (repo / "blobs").mkdir()
    blob = staging.rename(repo / "blobs" / digest)
    snapshot = repo / "snapshots" / COMMIT / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


BUILD = """
import sys, torch
from reid.models import build_model
timm_encoder = build_model({"model": sys.argv[1], "pretrained": True})
clip_encoder = build_model({"model": sys.argv[2], "pretrained": True, "remove_proj": False})
torch.save({"timm": timm_encoder.backbone.state_dict(), "clip": clip_encoder.backbone.state_dict(),
            "clip_logit_scale": clip_encoder.logit_scale}, sys.argv[3])
"""


def test_pretrained_weights_by_name_come_from_the_hub_cache_offline(tmp_path):
    cache = tmp_path / "hub"
    timm_source = timm.create_model(TIMM_NAME)  # the hub file holds the 1000-class head too
    hub_id = timm.get_pretrained_cfg(TIMM_NAME).hf_hub_id
    write_to_hub_cache(cache, hub_id, "model.safetensors", timm_source.state_dict())
    clip_source = open_clip.create_model(CLIP_NAME)
    with torch.no_grad():
        clip_source.logit_scale.fill_(4.6052)
    clip_repo, clip_file = os.path.split(open_clip.get_pretrained_cfg(CLIP_NAME, CLIP_TAG)["hf_hub"])
    # open_clip asks the hub for the safetensors twin of the listed file first (pytorch_model.safetensors)
    assert clip_file == "pytorch_model.bin"
    write_to_hub_cache(cache, clip_repo, "pytorch_model.safetensors", clip_source.state_dict())
    del clip_source

    loaded = tmp_path / "loaded.pth"
    environment = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    environment |= {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1",
                    "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", BUILD, TIMM_NAME, f"open_clip:{CLIP_NAME}:{CLIP_TAG}", str(loaded)],
                            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(loaded, weights_only=True)

    written = {key: value for key, value in timm_source.state_dict().items() if not key.startswith("head.")}
    assert sorted(state["timm"]) == sorted(written)
    for key, value in written.items():
        assert torch.equal(state["timm"][key], value), key
    clip_written = load_file(next((cache / f"models--{clip_repo.replace('/', '--')}" / "blobs").iterdir()))
    visual = {key[len("visual."):]: value for key, value in clip_written.items() if key.startswith("visual.")}
    assert sorted(state["clip"]) == sorted(visual)
    for key, value in visual.items():
        assert torch.equal(state["clip"][key], value), key
    assert state["clip_logit_scale"] == pytest.approx(4.6052)


def test_without_the_cache_offline_loading_fails_naming_the_model(tmp_path):
    environment = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    environment |= {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1",
                    "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    code = "from reid.models import build_model; build_model({'model': 'test_vit.r160_in1k', 'pretrained': True})"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0 and "test_vit.r160_in1k" in result.stderr
