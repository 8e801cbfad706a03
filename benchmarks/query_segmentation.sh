#!/bin/bash
# Segmentation by querying vs a pixel U-Net: Kvasir-SEG and ISBI 2012 at 64^2 and 128^2 (2-core CPU).
# Run from the repository root after `make install`; outputs go to runs/ (ignored by git).
# Field models and latent sets (see docs/benchmarks.md for the numbers):
#   funcml train ../shared/data/seg/kvasir-seg --resolution 64 --preset cpu-image --omega-last 60 --inner-lr 1.0 \
#       --steps 300 --batch-size 8 --out runs/kvasir64
#   funcml encode ../shared/data/seg/kvasir-seg --model runs/kvasir64 --no-grad-rescale --out runs/kvasir64-lat
#   (the same for isbi2012-em -> runs/isbi64, runs/isbi64-lat)
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
S=${SEG_DATA:-../shared/data/seg}
F="nice -n 10 .venv/bin/funcml"
for NAME in kvasir isbi; do
  DATA=$S/kvasir-seg; EPOCHS=30; [ $NAME = isbi ] && DATA=$S/isbi2012-em && EPOCHS=200
  M=runs/${NAME}64; L=runs/${NAME}64-lat
  for INPUTS in features latent both; do
    $F segment train $DATA --model $M --latents $L --inputs $INPUTS --out runs/$NAME-head-$INPUTS --overwrite --json \
      > runs/$NAME-head-$INPUTS.log 2>&1
    for R in 64 128; do
      $F segment predict $DATA --head runs/$NAME-head-$INPUTS --model $M --latents $L --split test --resolution $R \
        --out runs/$NAME-pred-$INPUTS-$R --overwrite --json > runs/$NAME-pred-$INPUTS-$R.log 2>&1
    done
  done
  for R in 64 128; do
    $F segment unet $DATA --resolution $R --epochs $EPOCHS --out runs/$NAME-unet-$R --overwrite --json > runs/$NAME-unet-$R.log 2>&1
  done
done
