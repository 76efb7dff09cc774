"""reid.config: command line <-> Configuration dataclass <-> JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from reid.config import ConfigError, RerankSettings, TrainingConfig, config_to_dict, load_config, parse, save_config
from reid.errors import InputError


@dataclass
class Configuration:
    """Toy stage configuration."""

    epochs: int = 10
    """Number of training epochs."""
    lr: float = 4e-5
    """Peak learning rate."""
    model: str = "eva_large_patch14_336.in22k_ft_in22k_in1k"
    """timm model name."""
    data_dir: Path = Path("data")
    """Folder that holds data_reid/."""
    loss: Literal["infonce", "id", "triplet"] = "infonce"
    """Training loss."""
    zero_shot: bool = True
    """Evaluate before the first epoch."""
    fold: int | None = None
    """Cross-validation fold held out; None trains on the train split."""
    weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    """One weight per input."""
    img_size: tuple[int, ...] = (336,)
    """Square side, or height and width."""


def test_defaults_without_flags():
    assert parse(Configuration, []) == Configuration()


def test_every_type_from_flags():
    config = parse(
        Configuration,
        ["--epochs", "2", "--lr", "1e-3", "--model", "resnet50", "--data-dir", "/tmp/d", "--loss", "triplet",
         "--no-zero-shot", "--fold", "3", "--weights", "1", "0.5", "2", "--img-size", "224", "448"],
    )
    assert config == Configuration(
        epochs=2, lr=1e-3, model="resnet50", data_dir=Path("/tmp/d"), loss="triplet", zero_shot=False, fold=3,
        weights=[1.0, 0.5, 2.0], img_size=(224, 448),
    )
    assert parse(Configuration, ["--fold", "None"]).fold is None
    assert parse(Configuration, ["--zero-shot"]).zero_shot is True


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--epochs", "two"], "--epochs"),
        (["--loss", "focal"], "focal"),
        (["--bogus", "1"], "--bogus"),
        (["--fold", "x"], "--fold"),
    ],
)
def test_bad_flag_or_value_stops_naming_it(args, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(Configuration, args)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


def test_json_round_trip_and_flags_win(tmp_path):
    original = Configuration(epochs=3, data_dir=Path("somewhere"), weights=[2.0], img_size=(224, 224), fold=1)
    path = save_config(original, tmp_path / "run" / "config.json")
    assert json.loads(path.read_text())["data_dir"] == "somewhere"
    assert load_config(Configuration, path) == original
    assert parse(Configuration, ["--config", str(path)]) == original
    overridden = parse(Configuration, ["--epochs", "7", f"--config={path}"])
    assert overridden.epochs == 7 and overridden.img_size == (224, 224) and overridden.fold == 1


def test_bad_json_names_the_field(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": "many"}))
    with pytest.raises(ConfigError, match="epochs"):
        load_config(Configuration, path)
    path.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(ConfigError, match="epoch"):
        load_config(Configuration, path)
    assert load_config(Configuration, path, strict=False) == Configuration()
    with pytest.raises(SystemExit):
        parse(Configuration, ["--config", str(path)])
    assert "unknown field" in capsys.readouterr().err


def test_config_to_dict_is_plain_json():
    values = config_to_dict(Configuration(img_size=(1, 2)))
    assert values["img_size"] == [1, 2] and values["data_dir"] == "data"
    json.dumps(values)


def test_help_lists_fields_with_descriptions(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(
        '"""Stage docstring.\n\n    python stage.py --epochs 2\n"""\n'
        "from dataclasses import dataclass\n"
        "from reid.config import parse\n\n"
        "@dataclass\nclass Configuration:\n"
        "    batch_size: int = 8\n    \"\"\"Pairs per batch.\"\"\"\n\n"
        "if __name__ == '__main__':\n    print(parse(Configuration))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                            env={"PYTHONPATH": str(repo), "COLUMNS": "120", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    for text in ("Stage docstring", "--batch-size", "Pairs per batch.", "8"):
        assert text in result.stdout


def test_rerank_settings_defaults_overrides_and_checks():
    # the published pipeline's settings, once: the training fields' defaults are these
    assert RerankSettings() == RerankSettings(k1=20, k2=6, lambda_value=0.7, expansion_threshold=2 / 3)
    training = TrainingConfig()
    assert (training.k1, training.k2, training.lambda_value) == (20, 6, 0.7)
    assert training.rerank_settings == RerankSettings()
    assert RerankSettings().replaced(k1=30, lambda_value=None) == RerankSettings(k1=30)  # None keeps a value
    with pytest.raises(InputError, match="--k2"):
        RerankSettings(k1=4, k2=5)
    with pytest.raises(InputError, match="--k1"):
        RerankSettings().replaced(k1=0)


def test_a_training_configuration_may_only_give_other_defaults():
    @dataclass
    class Recipe(TrainingConfig):
        epochs: int = 3

    assert Recipe().epochs == 3 and Recipe().lr == TrainingConfig().lr
    with pytest.raises(TypeError, match=r"learning_rate not field\(s\) of reid.config.TrainingConfig"):
        @dataclass
        class Misspelt(TrainingConfig):
            learning_rate: float = 1e-3
    checkpoint = {"model": "resnet50", "k1": 30, "field_of_another_version": 1}
    saved = TrainingConfig.from_checkpoint(checkpoint)
    assert saved.model == "resnet50" and saved.k1 == 30 and saved.k2 == 6  # what it lacks: the defaults
    with pytest.raises(InputError, match=r"best\.pth: its training configuration does not fit.*'epochs'"):
        TrainingConfig.from_checkpoint({"model": "resnet50", "epochs": "many"}, "best.pth")
