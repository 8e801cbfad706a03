#!/bin/bash
# Super-resolution BreastMNIST 28 -> 64 and imputation from partial observations (2-core CPU).
# Run from the repository root after `make install`; outputs go to runs/ (ignored by git).
# Numbers: docs/benchmarks.md (results/query-*.json), section "Querying fields".
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
D=${FUNCML_SHARED_DATA:-../shared/data}
F="nice -n 10 .venv/bin/funcml"
A="--preset cpu-image --omega-last 60 --inner-lr 1.0"
L=$D/medmnist/breastmnist.npz; H=$D/medmnist/breastmnist_64.npz
# Three 600-step models trained the same way: plain (fits 28x28 only), and supervised between the
# samples by the 64x64 copies (1024 random 64x64 positions per step), with P = 256 and P = 1024.
$F train $L $A --out runs/bm28-plain --json > runs/bm28-plain.log 2>&1
$F train $L $A --target-data $H --target-coords 1024 --out runs/bm28-sr --json > runs/bm28-sr.log 2>&1
$F train $L $A --latent-dim 1024 --target-data $H --target-coords 1024 --out runs/bm28-sr-p1024 --json \
  > runs/bm28-sr-p1024.log 2>&1
# Ten times the training of the P = 1024 SR model, at a third of the preset's outer learning rate
# (the preset's 3e-4 diverged after ~1800 steps); about 19 minutes with OMP_NUM_THREADS=2.
$F train $L $A --latent-dim 1024 --outer-lr 1e-4 --target-data $H --target-coords 1024 --steps 6000 \
  --val-every 1000 --out runs/bm28-sr-p1024-lr1e-4 --json > runs/bm28-sr-p1024-lr1e-4.log 2>&1
for M in plain sr sr-p1024 sr-p1024-lr1e-4; do
  $F superres $L $H --model runs/bm28-$M --out runs/sr-$M --json > runs/sr-$M.log 2>&1
done
# More test-time steps (first 64 test images)
$F superres $L $H --model runs/bm28-sr-p1024 --steps 150 --max-items 64 --out runs/sr-sr-p1024-h150 --json \
  > runs/sr-sr-p1024-h150.log 2>&1
# Fit vs between samples (funcml_fit_bicubic, gain_between_samples) with more test-time steps, first 32 test images
for STEPS in 20 300 1000; do
  $F superres $L $H --model runs/bm28-sr-p1024 --steps $STEPS --max-items 32 --out runs/sr2-h$STEPS --json \
    > runs/sr2-h$STEPS.log 2>&1
done
# Imputation: half of the test pixels hidden at random, fitted with the plain 600-step model.
$F impute $L --model runs/bm28-plain --observed random:0.5 --split test --out runs/imp-random50 --json \
  > runs/imp-random50.log 2>&1
