#!/bin/bash
# Segmentation by querying vs a pixel U-Net: Kvasir-SEG and ISBI 2012, heads on 64^2 fields, masks
# predicted at 64^2 and 128^2 (2-core CPU). Run from the repository root after `make install`;
# outputs go to runs/ (ignored by git). Numbers: docs/benchmarks.md, section "Querying fields".
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
S=${SEG_DATA:-${FUNCML_SHARED_DATA:-../shared/data}/seg}
F="nice -n 10 .venv/bin/funcml"
A="--preset cpu-image --omega-last 60 --inner-lr 1.0"
data() { [ $1 = isbi ] && echo $S/isbi2012-em || echo $S/kvasir-seg; }
# Field models at 64^2 (300 steps) and latent sets of all images (default 70/10/20 split, seed 0).
for NAME in kvasir isbi; do
  $F train $(data $NAME) --resolution 64 $A --steps 300 --batch-size 8 --out runs/${NAME}64 --json > runs/${NAME}64.log 2>&1
  $F encode $(data $NAME) --model runs/${NAME}64 --no-grad-rescale --out runs/${NAME}64-lat --json > runs/${NAME}64-lat.log 2>&1
done
head() { # NAME INPUTS STEPS COORDS TAG: train a head, predict the test split at 64^2 and 128^2
  $F segment train $(data $1) --model runs/${1}64 --latents runs/${1}64-lat --inputs $2 --steps $3 \
    --coords-per-signal $4 --out runs/$1-head-$5 --overwrite --json > runs/$1-head-$5.log 2>&1
  for R in 64 128; do
    $F segment predict $(data $1) --head runs/$1-head-$5 --model runs/${1}64 --latents runs/${1}64-lat --split test \
      --resolution $R --out runs/$1-pred-$5-$R --overwrite --json > runs/$1-pred-$5-$R.log 2>&1
  done
}
unet() { # NAME R EPOCHS: the pixel baseline on the same images at R^2
  $F segment unet $(data $1) --resolution $2 --epochs $3 --out runs/$1-unet-$2 --overwrite --json > runs/$1-unet-$2.log 2>&1
}
head isbi both 1500 1024 both     # the defaults
head kvasir both 400 512 both     # cut down: the shared machine ran at load 8-9
unet isbi 64 200
unet isbi 128 200
unet kvasir 64 10                 # cut down from 30 epochs for the same reason
unet kvasir 128 10
# --- equal settings (idle machine, 2 threads: run with OMP_NUM_THREADS=2) -----------------------------
# Which inputs work: ISBI heads, 500 steps, 1024 positions per image (64x64 predictions only).
head64() { # NAME INPUTS STEPS COORDS TAG [extra head options]
  local n=$1 i=$2 st=$3 c=$4 t=$5; shift 5
  $F segment train $(data $n) --model runs/${n}64 --latents runs/${n}64-lat --inputs $i --steps $st \
    --coords-per-signal $c --out runs/$n-head-$t --overwrite --json "$@" > runs/$n-head-$t.log 2>&1
  $F segment predict $(data $n) --head runs/$n-head-$t --model runs/${n}64 --latents runs/${n}64-lat --split test \
    --resolution 64 --out runs/$n-pred-$t-64 --overwrite --json > runs/$n-pred-$t-64.log 2>&1
}
head64 isbi features 500 1024 features-500
head64 isbi latent 500 1024 latent-500
head64 isbi both 500 1024 both-500
head64 isbi both 500 1024 both-ctx1-500 --context 1
# Kvasir heads, 1500 steps, 512 positions per image, predicted at 64^2 and 128^2.
head kvasir features 1500 512 features-1500
head kvasir both 1500 512 both-1500
head kvasir latent 1500 512 latent-1500
# The U-Net baseline for the 30 epochs.
$F segment unet $(data kvasir) --resolution 64 --epochs 30 --out runs/kvasir-unet30-64 --overwrite --json \
  > runs/kvasir-unet30-64.log 2>&1
$F segment unet $(data kvasir) --resolution 128 --epochs 30 --out runs/kvasir-unet30-128 --overwrite --json \
  > runs/kvasir-unet30-128.log 2>&1
