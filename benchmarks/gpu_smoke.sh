#!/usr/bin/env bash
# CUDA smoke test (about 10 minutes on one GPU): pretraining with AMP on nnU-Net's default 3d_fullres
# plans of a small synthetic dataset, fine-tuning with nnSSLTrainer, step times and peak GPU memory, and
# whole-volume prediction with nnssl_predict.
#
#   bash benchmarks/gpu_smoke.sh            (uses .venv; NNSSL_VENV=path to use another environment)
#
# 1. nnUNetv2_plan_and_preprocess of a synthetic 5-case dataset (64x128x128);
# 2. nnssl_pretrain -d (flow 1, mae, AMP on CUDA): 1 epoch x 20 iterations, its epoch time;
# 3. nnUNetv2_train -tr nnSSLTrainer_2epochs_5iters_noMirroring on CUDA (loads the pretrained encoder);
# 4. benchmarks/step_cost.py --device cuda: median step time of every method and of nnU-Net's
#    supervised step, their ratios and each one's peak GPU memory (JSON);
# 5. benchmarks/big_predict.py --device cuda: a small model trained on CUDA, then nnssl_predict on a
#    256x1024x1024 OME-Zarr organ, beside nnUNetv2_predict on a volume that fits (last line, JSON:
#    mvoxel_per_s, peak_gpu_gib per run, from nvidia-smi, and peak_pss_gib).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${NNSSL_VENV:-.venv}"
BIN="$VENV/bin"
WORK="$(mktemp -d -t nnssl_gpu_smoke_XXXX)"
trap 'rm -rf "$WORK"' EXIT
export nnUNet_raw="$WORK/raw" nnUNet_preprocessed="$WORK/preprocessed" nnUNet_results="$WORK/results"
export nnUNet_compile=false
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
"$BIN/python" -c "
from tests.synthetic import write_labeled_dataset, write_unlabeled_folder
write_labeled_dataset('$nnUNet_raw', 501, num_cases=5, shape=(64, 128, 128), num_test_cases=0)
write_unlabeled_folder('$WORK/unlabeled', num_cases=4, shape=(64, 128, 128), seed=7)"
"$BIN/python" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
"$BIN/nnUNetv2_plan_and_preprocess" -d 501 -c 3d_fullres -np 4 -npfp 4 --no_pbar > "$WORK/plan.log"
echo "== pretraining (nnssl_pretrain, mae, AMP) =="
start=$(date +%s)
"$BIN/nnssl_pretrain" -d 501 -i "$WORK/unlabeled" --epochs 1 --iterations-per-epoch 20 --val-iterations 2 \
    -device cuda --no-pbar 2>&1 | grep -E "pretraining|epoch 0|done:"
echo "pretraining wall time: $(( $(date +%s) - start )) s"
echo "== fine-tuning (nnUNetv2_train -tr nnSSLTrainer_2epochs_5iters_noMirroring) =="
start=$(date +%s)
"$BIN/nnUNetv2_train" 501 3d_fullres 0 -tr nnSSLTrainer_2epochs_5iters_noMirroring -device cuda 2>&1 \
    | grep -E "pretrained|loaded|Epoch time|train_loss|Mean Validation Dice" || true
echo "fine-tuning wall time: $(( $(date +%s) - start )) s"
test -f "$nnUNet_results"/Dataset501_*/nnSSLTrainer_2epochs_5iters_noMirroring__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth
echo "== step cost and peak memory (AMP) =="
"$BIN/python" benchmarks/step_cost.py --device cuda --steps 10 --warmup 3 --shape 64 128 128 2>/dev/null | tail -7
echo "== large-volume prediction on CUDA (nnssl_predict, 256x1024x1024 OME-Zarr) =="
"$BIN/python" benchmarks/big_predict.py --device cuda --shape 256 1024 1024 --no-half --work "$WORK/big_predict" \
    | tail -1
