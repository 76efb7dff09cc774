#!/usr/bin/env bash
# Every stage of the pipeline on the small synthetic SynergyReID twin, offline, on the CPU, in minutes.
#   bash demo.sh            (outputs under demo_out/; DEMO_DIR=elsewhere bash demo.sh to move them)
set -euo pipefail
cd "$(dirname "$0")"
DEMO_DIR=${DEMO_DIR:-demo_out}
DATA="$DEMO_DIR/data"
export PYTHONUNBUFFERED=1

echo "== 1/2 download_data.py: the synthetic twin (no network)"
python download_data.py --source synthetic --data-dir "$DATA" --scale small --seed 0

echo "== 2/2 preprocess_data.py: image folders -> train_df.csv, challenge_df.csv"
python preprocess_data.py --data-dir "$DATA"

echo
echo "Demo finished. Outputs:"
echo "  images       $DATA/data_reid/"
echo "  tables       $DATA/data_reid/train_df.csv, $DATA/data_reid/challenge_df.csv"
