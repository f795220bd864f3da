#!/usr/bin/env bash
# Maintainers' measurement (the README's small-data table): the study-faithful reference loop against the paper /
# ours / default recipes on dataset=synthetic_small (visible, 64 px, random init), with the ablations of the gap.
#
#   tools/small_data_study.sh JOB SEED     # one run, into logs/small/JOB-sSEED/ (wall, user, system seconds in time)
#   tools/small_data_study.sh list         # the job names
#   python tools/small_data_table.py       # the table, from logs/small/
#
# Same split, resolution and image budget everywhere: 120 training images x 26 offline copies x 10 epochs
# (31,200 images), or 260 online epochs of 120 for the online recipes; one thread per job (2 cores: 2 jobs at once).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-/work/main/.venv/bin/python}
DATA=${DATA:-$PWD/data}
LOGS=${LOGS:-$PWD/logs/small}
EPOCHS=10
ONLINE=$((EPOCHS * 26))

# the paper preset as it was at commit 1705b03 (albumentations' Perspective 0.05-0.125, shear 11.5 deg), for the
# ablation
OLD_CONF=$LOGS/conf
mkdir -p "$OLD_CONF/augment"
git show 1705b03:conf/augment/paper.yaml > "$OLD_CONF/augment/paper_albu_old.yaml"

COMMON=(dataset=synthetic_small modality=visible model.backbone.weights=null dataset.image_size=64
        logger=csv "paths.data_dir=$DATA" "hydra.searchpath=[file://$OLD_CONF]")
PAPER=(experiment=paper_viri_visible "${COMMON[@]}" trainer.max_epochs=$EPOCHS)
# the reference loop's optimiser steps (ceil(120 x 26 / 64) = 49 per epoch) and validation checks, so the
# online recipe spends the same compute as the offline ones
STEPS=$((EPOCHS * 49))
OURS=(experiment=ours_viri_visible "${COMMON[@]}" budget.steps=$STEPS budget.val_checks=$EPOCHS)
# fusion on the same split (both cameras), the ours recipe at the same steps
FUSION=(experiment=ours_viri_fusion dataset=synthetic_small model.backbone.weights=null dataset.image_size=64
        logger=csv "paths.data_dir=$DATA" budget.steps=$STEPS budget.val_checks=$EPOCHS)
REF=("$PY" fer_lightning/benchmarks/study_loop.py --manifest "$DATA/synthetic_small/manifest.csv" --image-size 64
     --epochs $EPOCHS)

declare -A JOBS=(
    [ref]=""                                       # torchvision, double softmax, later tie, source resolution
    [ref_logits]="--logits"
    [ref_cache72]="--aug-size 72"                  # warp a 72 px copy, as a 1.125x cache at 64 px did
    [ref_albu]="--albumentations conf/augment/paper.yaml"
    [ref_albu_old]="--albumentations $OLD_CONF/augment/paper_albu_old.yaml"
    [paper]="model.softmax_before_loss=true"       # the study's double softmax
    [paper_logits]="model.softmax_before_loss=false"
    [paper_cache1125]="model.softmax_before_loss=true dataset.cache_scale=1.125"
    [paper_albu_old]="model.softmax_before_loss=true augment=paper_albu_old"
    [ours]=""                                      # online, logits, one cosine per step, ImageNet mean/std
    [ours_softmax]="model.softmax_before_loss=true"
    [ours_offline]="augment.offline_copies=26 model.softmax_before_loss=true"
    [ours_cache1125]="dataset.cache_scale=1.125"
    [ours_ema98]="+callbacks.ema._target_=lightning.pytorch.callbacks.EMAWeightAveraging +callbacks.ema.decay=0.98"
    [ours_adamw]="model.optimizer._target_=torch.optim.AdamW +model.optimizer.weight_decay=0.05"
    [ours_lr3]="model.optimizer.lr=0.003"
    [ours_mixup02]="model.mixup_alpha=0.2"
    [ours_mixup1]="model.mixup_alpha=1.0"
    # measured when budget.plan still took interval = epochs // val_checks: 450 -> 484 steps (now 450 exactly)
    [ours_mixup02_484]="model.mixup_alpha=0.2 budget.steps=450"
    # 480 steps exactly (24 x 10 validation intervals) since budget.plan picks the interval that overshoots
    # least: no more steps than the loop's 490 (measured: 451 CPU s per run, as the loop's)
    [ours_480]="budget.steps=480"
    [ours_ema99]="+callbacks.ema._target_=lightning.pytorch.callbacks.EMAWeightAveraging +callbacks.ema.decay=0.99"
    [fusion_ours]=""                               # gated + per-branch classifiers
    [fusion_ours_mixup02]="model.mixup_alpha=0.2"
    [default]=""                                   # 12 epochs x 120 images = 24 optimiser steps
    [default_budget]="trainer.max_epochs=$ONLINE trainer.check_val_every_n_epoch=26"
)

if [[ "${1:-}" == "list" ]]; then printf '%s\n' "${!JOBS[@]}" | sort; exit 0; fi
job=$1 seed=$2
[[ -v "JOBS[$job]" ]] || { echo "error: unknown job $job (tools/small_data_study.sh list)" >&2; exit 2; }
out=$LOGS/$job-s$seed
[[ -f $out/results.json || -f $out/result.json ]] && { echo "done already: $out"; exit 0; }
mkdir -p "$out"
read -r -a extra <<< "${JOBS[$job]}"
"$PY" -m fer_lightning.prepare "${COMMON[@]:0:1}" "paths.data_dir=$DATA" "hydra.run.dir=$LOGS/.prepare" > /dev/null
start=$(date +%s%N)
# wall, user and system seconds: on a shared machine CPU seconds compare runs better than wall time
TIME=(/usr/bin/time -f "%e %U %S" -o "$out/time")
case $job in
    ref*) "${TIME[@]}" "${REF[@]}" --seed "$seed" --out "$out/result.json" "${extra[@]}" > "$out/log.txt" 2>&1 ;;
    paper*) "${TIME[@]}" "$PY" -m fer_lightning.train "${PAPER[@]}" "${extra[@]}" seed="$seed" "hydra.run.dir=$out" > "$out/log.txt" 2>&1 ;;
    ours*) "${TIME[@]}" "$PY" -m fer_lightning.train "${OURS[@]}" "${extra[@]}" seed="$seed" "hydra.run.dir=$out" > "$out/log.txt" 2>&1 ;;
    fusion*) "${TIME[@]}" "$PY" -m fer_lightning.train "${FUSION[@]}" "${extra[@]}" seed="$seed" "hydra.run.dir=$out" > "$out/log.txt" 2>&1 ;;
    default*) "${TIME[@]}" "$PY" -m fer_lightning.train "${COMMON[@]}" "${extra[@]}" seed="$seed" "hydra.run.dir=$out" > "$out/log.txt" 2>&1 ;;
esac
awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f\n", (b - a) / 1e9 }' > "$out/wall_seconds"
echo "$job seed $seed: $(cat "$out/wall_seconds") s"
