#!/usr/bin/env bash
# Every stage of the pipeline on the small synthetic SynergyReID twin, offline, on the CPU, in minutes.
#   bash demo.sh            (outputs under demo_out/; DEMO_DIR=elsewhere bash demo.sh to move them)
set -euo pipefail
cd "$(dirname "$0")"
DEMO_DIR=${DEMO_DIR:-demo_out}
DATA="$DEMO_DIR/data"
MODELS="$DEMO_DIR/model"
PRED="$DEMO_DIR/predictions"
FUSED="$DEMO_DIR/fused"
export PYTHONUNBUFFERED=1
# One thread per process: tiny models gain nothing from a second one, and on a busy 2-core machine
# torch's threads wait for each other (an epoch measured 5 s with one thread, 84 s with two).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# A tiny CNN (0.4 M parameters, random init) at 48 x 24 pixels: 6 epochs take about 30 s on a CPU
# (one loader process decodes images on the second core while the main one trains).
TINY=(--model test_resnet --no-pretrained --img-size 48 24 --batch-size 32 --lr 2e-3 --warmup-epochs 0
      --scheduler constant --epochs 6 --device cpu --num-workers 1 --no-verbose --data-dir "$DATA" --model-path "$MODELS"
      --overwrite)  # a second demo replaces the first one's runs

echo "== 1/10 download_data.py: the synthetic twin (no network)"
python download_data.py --source synthetic --data-dir "$DATA" --scale small --seed 0

echo "== 2/10 preprocess_data.py: image folders -> train_df.csv, challenge_df.csv"
python preprocess_data.py --data-dir "$DATA"

echo "== 3/10 train_our_post.py: three tiny runs (seeds 1, 2, 3) to fuse later, as the paper fuses three models"
python train_our_post.py "${TINY[@]}" --seed 1 --run-name tiny_seed1 --zero-shot
python train_our_post.py "${TINY[@]}" --seed 2 --run-name tiny_seed2
python train_our_post.py "${TINY[@]}" --seed 3 --run-name tiny_seed3

echo "== 4/10 evaluate.py: test-split scores and a rank list of one run"
python evaluate.py --checkpoint "$MODELS/tiny_seed1/best.pth" --data-dir "$DATA" --output-dir "$DEMO_DIR/evaluate" \
    --device cpu --num-workers 0 --no-verbose

echo "== 5/10 predict.py: features, test and challenge matrices of the three runs, and their mean"
python predict.py --checkpoint "$MODELS"/tiny_seed{1,2,3}/best.pth --data-dir "$DATA" \
    --output-dir "$PRED" --device cpu --num-workers 0 --no-verbose

echo "== 6/10 my_py: the paper's 3-step fusion of the three runs' hard-weight re-ranked matrices"
for SPLIT in test challenge; do
    RUNS=("$PRED"/tiny_seed{1,2,3}/"${SPLIT}_hard.csv")
    python my_py/sim_fuse.py --inputs "${RUNS[@]}" --output "$FUSED/${SPLIT}_sim.csv"
    python my_py/dissim_fuse.py --inputs "${RUNS[@]}" --output "$FUSED/${SPLIT}_dissim.csv"
    python my_py/sim_fuse.py --inputs "$FUSED/${SPLIT}_sim.csv" "$FUSED/${SPLIT}_dissim.csv" --output "$FUSED/${SPLIT}_final.csv"
done

echo "== 7/10 predict_fortestset.py: the fused test matrix"
python predict_fortestset.py --csv "$FUSED/test_final.csv" --data-dir "$DATA"

echo "== 8/10 predict_fortestset.py: the fused challenge submission against the twin's ground truth"
python predict_fortestset.py --csv "$FUSED/challenge_final.csv" --truth "$DATA/synthetic_challenge_truth.csv"

echo "== 9/10 my_py: t-SNE map, intra/inter distances, row and column names of the matrices"
python my_py/plot_fea.py --features "$PRED/tiny_seed1/features_test.npz"
python my_py/cal_feadist.py --features "$PRED/tiny_seed1/features_test.npz"
python my_py/name_test.py --data-dir "$DATA" --output-dir "$DEMO_DIR/names" --matrix "$FUSED/test_final.csv"
python my_py/name_challenge.py --data-dir "$DATA" --output-dir "$DEMO_DIR/names" --matrix "$FUSED/challenge_final.csv"

echo "== 10/10 the trained model elsewhere: ONNX export, search and clustering of crops in plain folders"
if python -c "import onnx, onnxscript, onnxruntime" 2>/dev/null; then
    python export.py --checkpoint "$MODELS/tiny_seed1/best.pth" --output "$DEMO_DIR/onnx/tiny_seed1.onnx" --overwrite
else
    echo "(export.py skipped: it needs pip install -r requirements-extras.txt)"
fi
CHALLENGE="$DATA/data_reid/reid_challenge"
python search.py --checkpoint "$MODELS/tiny_seed1/best.pth" --query "$CHALLENGE/query" --gallery "$CHALLENGE/gallery" \
    --output-dir "$DEMO_DIR/search" --device cpu --num-workers 0 --no-verbose
python cluster.py --checkpoint "$MODELS/tiny_seed1/best.pth" --images "$CHALLENGE" --truth "$DATA/synthetic_challenge_truth.csv" \
    --data-dir "$DATA" --threshold-games 4 --output-dir "$DEMO_DIR/cluster" --device cpu --num-workers 0 --no-verbose

echo
echo "Demo finished. Outputs:"
echo "  images       $DATA/data_reid/"
echo "  tables       $DATA/data_reid/train_df.csv, $DATA/data_reid/challenge_df.csv"
echo "  runs         $MODELS/tiny_seed{1,2,3}/ (config.json, log.txt, metrics.csv, curves.png, best.pth, last.pth)"
echo "  evaluation   $DEMO_DIR/evaluate/ (scores.csv, scores.json, ranklist.png)"
echo "  predictions  $PRED/tiny_seed{1,2,3}/ (features_*.npz, {test,challenge}_{raw,classic,hard}.csv), $PRED/ensemble/, $PRED/scores.csv"
echo "  fusion       $FUSED/{test,challenge}_final.csv (the submission: $FUSED/challenge_final.csv)"
echo "  analysis     $PRED/tiny_seed1/features_test_tsne_all.png, $PRED/tiny_seed1/features_test_all_feadist.{csv,json,png}"
echo "  names        $DEMO_DIR/names/{test,challenge}_{query,gallery}_names.csv"
echo "  elsewhere    $DEMO_DIR/onnx/tiny_seed1.{onnx,json}, $DEMO_DIR/search/{ranking.csv,ranklist.png}, $DEMO_DIR/cluster/{identities.csv,sheets/}"
