#!/usr/bin/env bash
# Reproduce Naseem et al. 2025 (docs/study.md) with the study's recipe, the experiment=paper_<dataset>_<modality>
# presets: for each dataset and seed it trains the infrared model, then the fusion model with its infrared branch
# started from that infrared run's tested checkpoint (model.infrared_init, as the study did), then the visible
# model; then prints the test accuracy over seeds beside the study's (python -m fer_lightning.report).
#
#   scripts/reproduce_paper.sh [key=value ...]     the overrides are given to every run, after the script's own
#
# Environment: DATASETS (default "viri nvie"), SEEDS (default "0 1 2 3 4"), OUT (default logs/paper; run dirs are
# $OUT/<dataset>/<modality>/seed<seed>, the table goes to $OUT/report.md), PYTHON (default python).
# VIRI and NVIE are downloaded on first use. A run that already has its results.json is skipped and one stopped
# midway resumes from its last.ckpt, so running the same command again continues an interrupted reproduction.
# Each finished run keeps only the checkpoint it tested (callbacks.model_checkpoint.keep=tested; pass
# callbacks.model_checkpoint.keep=all to keep last.ckpt too).
set -euo pipefail

PYTHON=${PYTHON:-python}
read -r -a datasets <<< "${DATASETS:-viri nvie}"
read -r -a seeds <<< "${SEEDS:-0 1 2 3 4}"
OUT=${OUT:-logs/paper}
EXTRA=("$@")

train() {  # dataset modality seed [overrides...]
    local dataset=$1 modality=$2 seed=$3
    shift 3
    local dir="$OUT/$dataset/$modality/seed$seed"
    if [[ -f $dir/results.json ]]; then
        echo "reproduce: $dir has its results; skipped"
        return
    fi
    local resume=()
    if [[ -f $dir/checkpoints/last.ckpt ]]; then
        resume=(ckpt_path=last)
    fi
    echo "reproduce: $dataset $modality seed $seed -> $dir"
    "$PYTHON" -m fer_lightning.train "experiment=paper_${dataset}_${modality}" "seed=$seed" "hydra.run.dir=$dir" \
        callbacks.model_checkpoint.keep=tested "${resume[@]}" "$@" "${EXTRA[@]}"
}

tested_checkpoint() {  # results.json -> the checkpoint its run tested
    "$PYTHON" -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r.get("checkpoint") or r["best_checkpoint"])' "$1"
}

for dataset in "${datasets[@]}"; do
    for seed in "${seeds[@]}"; do
        train "$dataset" infrared "$seed"
        init=$(tested_checkpoint "$OUT/$dataset/infrared/seed$seed/results.json")
        train "$dataset" fusion "$seed" "model.infrared_init='$init'"
        train "$dataset" visible "$seed"
    done
done

"$PYTHON" -m fer_lightning.report "$OUT"
