#!/usr/bin/env bash
# Download here (with internet) the wheels of the requirements that the lent GPU machine lacks, for
# bench/gpu_check.py there (Python 3.12, no internet; torch, timm and the scientific stack installed).
#   bash bench/gpu_wheels.sh            # -> .whl/ (ignored by git), about 2 MB
#   bash bench/gpu_wheels.sh DIR        # -> DIR/
# There:  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#             --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
# The machine lacks tyro and open_clip_torch and, of their dependencies, docstring-parser and typeguard
# (tyro), ftfy and wcwidth (open_clip_torch); it has typing-extensions, regex, huggingface-hub,
# safetensors, timm, torch, torchvision and tqdm. --no-deps: each missing package is named here, one
# version each (two versions of one package stop the whole install there). Should tyro fail to import there
# (typeguard needs typing_extensions >= 4.14), add typing_extensions==4.16.0 to the list.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
WHEELS=(tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.7.0)
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$DEST" "${WHEELS[@]}"
ls -1 "$DEST"
echo "wheels in $DEST: carry it to the GPU machine (device tool: carry [\"$DEST\"]); README: Checking a GPU machine"
