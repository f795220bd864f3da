#!/usr/bin/env bash
# Maintainers' benchmark, not a user command (users run python -m fer_lightning.bench): the GPU rows of the
# README's "Speed" table in one call of a few minutes on a GPU machine, from the repository root.
#
#   scripts/gpu_bench.sh fetch   on a machine with a package index: downloads the wheels a bare GPU image lacks
#                                (hydra-core, omegaconf, albumentations and their pure needs) into .whl/
#                                (git-ignored), for Python 3.12
#   bash scripts/gpu_bench.sh    on the GPU machine, with .whl/ copied beside it where it has no package index:
#                                prints one table and writes $OUT/gpu_bench.jsonl (one bench JSON per row) and
#                                $OUT/gpu_bench.md
#
# Rows: visible and fusion at 224 px, batch 64, paper augmentation online, bf16-mixed + channels_last, each vs the
# study-style pipeline (2 workers) in the same process; then fusion at batch 256 + torch.compile (NO_COMPILE=1 skips).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(hydra-core==1.3.8 omegaconf==2.3.1 albumentations==2.0.8 albucore==0.0.24
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        stringzilla==5.3.2 simsimd==6.5.16)
PURE_SDISTS=(antlr4-python3-runtime==4.9.3)   # omegaconf's parser: published as a source archive only

if [[ "${1:-}" == "fetch" ]]; then
    mkdir -p .whl
    for w in "${WHEELS[@]}"; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$w"
    done
    for s in "${PURE_SDISTS[@]}"; do python3 -m pip wheel -q --no-deps -w .whl "$s"; done
    ls -1 .whl
    exit 0
fi

OUT="${OUT:-$(mktemp -d)}"
export PYTHONUNBUFFERED=1
if ! python3 -c "import hydra, albumentations" 2>/dev/null; then
    [[ -d .whl ]] || { echo "error: hydra/albumentations missing and no .whl/: run 'scripts/gpu_bench.sh fetch' here, then carry .whl" >&2; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cores', __import__('os').cpu_count())"

DATA=/tmp/fer-bench-data   # generated once, re-used by every row
COMMON=(--device cuda --image-size 224 --batch-size 64 --warmup 10 --data-dir "$DATA")
: > "$OUT/gpu_bench.jsonl"
row() {  # bench args...; keeps the JSON line, echoes the table
    python3 -m fer_lightning.bench "${COMMON[@]}" "$@" | tee "$OUT/last.txt"
    tail -n 1 "$OUT/last.txt" >> "$OUT/gpu_bench.jsonl"
}
row --modality visible --steps 300 --study-steps 40
row --modality fusion --steps 200 --study-steps 30
# The study's batch is 64; batch 256 + compile shows the card's headroom for the 60 s protocol target.
[[ "${NO_COMPILE:-0}" == 1 ]] || row --modality fusion --batch-size 256 --steps 100 --compile --skip-study

python3 - "$OUT/gpu_bench.jsonl" > "$OUT/gpu_bench.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| date | device | modality | px | batch | framework | study-style (2 workers) | ratio | loader alone | "
      "paper protocol at VIRI size (ours / study-style) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    u = r["unit"]
    extra = " + compile" if r["compile"] else ""
    r = {k: ("not run" if v is None else v) for k, v in r.items()}
    f = lambda x: x if isinstance(x, str) else f"{x:,.0f}"
    print(f"| {r['date']} | {r['device_name']} | {r['modality']} | {r['image_size']} | {r['batch_size']} | "
          f"{r['framework_img_s']:,.0f} {u} ({r['precision']}{extra}, {r['framework_workers']} workers) | "
          f"{f(r['study_style_img_s'])} {u} | {r['ratio']}x | {r['loader_img_s']:,.0f} {u} | "
          f"{r['protocol_s']:,.0f} s / {f(r['study_style_protocol_s'])} s ({r['protocol_how']}) |")
PY
cat "$OUT/gpu_bench.md"
