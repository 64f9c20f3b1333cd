#!/usr/bin/env bash
# Reproduce the bundled fast screening model (fastgap/models/fast/), what
# `fastgap predict --model fast` runs: one network predicting the band gap (regression on
# non-zero gaps) and p_metal (every structure) in one forward pass, fine-tuned from the
# shipped pretrained model.
#   1. featurize mp_gap36k into a feature store (kept; a finished store is reused)
#   2. fastgap train --config benchmarks/configs/fast_joint.toml (an interrupted run resumes)
#   3. pack the run as the bundle's band-gap regressor and classifier (one file)
#   4. evaluate on the fixed test split; metrics into card.json and MODEL_CARD.md
# Settings are variables below, overridable from the environment, e.g. a quick check:
#   LIMIT=300 EPOCHS=1 WORK=/tmp/fgf BUNDLE=/tmp/fgf/bundle scripts/train_fast_model.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${DATA:-/work/shared/data/mp_gap36k/structures.jsonl.gz}"
SPLIT="${SPLIT:-$REPO/benchmarks/splits/mp_gap36k.json}"
CONFIG="${CONFIG:-$REPO/benchmarks/configs/fast_joint.toml}"
WORK="${WORK:-$REPO/runs/fast_model}"           # store + training run
BUNDLE="${BUNDLE:-$REPO/fastgap/models/fast}"   # where the bundle is written
STORE="${STORE:-$WORK/store}"                   # an existing mp_gap36k store may be given
FASTGAP="${FASTGAP:-fastgap}"
PYTHON="${PYTHON:-python}"
LIMIT="${LIMIT:-0}"       # use only the first LIMIT records (0 = all)
EPOCHS="${EPOCHS:-}"      # empty = the config's
SEED="${SEED:-0}"
MAX_Z="${MAX_Z:-85}"
RESULTS="${RESULTS:-}"    # e.g. benchmarks/RESULTS.md: write the test metrics there too

source "$REPO/scripts/bundle_common.sh"
mkdir -p "$WORK"
if [ ! -f "$STORE/zarr.json" ]; then
  INPUT="$DATA"
  if [ "$LIMIT" -gt 0 ]; then
    INPUT="$WORK/first_${LIMIT}.jsonl"
    first_records "$DATA" "$INPUT" "$LIMIT"
  fi
  "$FASTGAP" featurize "$INPUT" --out "$STORE" --workers 2 --no-progress
fi

RUN="$WORK/fast_seed$SEED"
if [ ! -f "$RUN/metrics.json" ]; then
  resume=(); [ -f "$RUN/last_state.pt" ] && resume=(--resume)
  epochs=(); [ -n "$EPOCHS" ] && epochs=(--epochs "$EPOCHS")
  OMP_NUM_THREADS=1 "$FASTGAP" train --config "$CONFIG" --store "$STORE" --split-file "$SPLIT" \
    --max-z "$MAX_Z" --seed "$SEED" --device cpu --no-progress --out "$RUN" \
    ${epochs[@]+"${epochs[@]}"} ${resume[@]+"${resume[@]}"}
fi

COMMAND="CONFIG=$(basename "$CONFIG") LIMIT=$LIMIT EPOCHS=${EPOCHS:-config} SEED=$SEED MAX_Z=$MAX_Z scripts/train_fast_model.sh"
"$PYTHON" - "$BUNDLE" "$DATA" "$SPLIT" "$COMMAND" "$LIMIT" "$MAX_Z" "$RUN" <<'PY'
import sys
from fastgap.bundle_card import pack_bundle, source_fields
bundle, data, split, command, limit, max_z, run = sys.argv[1:]
card = {
    "name": "fastgap fast screening model (one network: band gap and p_metal)",
    **source_fields(data, split, int(limit)),
    "filters": {"band_gap": f"band_gap_eV > 0 (target_where of the config), max_z {max_z}",
                "metal": f"all, max_z {max_z} (the same network's is_metal output)"},
    "command": command,
}
print(pack_bundle(bundle, [run], [run], card))
PY
"$PYTHON" "$REPO/scripts/evaluate_screening.py" --model "$BUNDLE" --store "$STORE" \
  --split "$SPLIT" --out "$WORK/evaluation" --card ${RESULTS:+--results "$RESULTS"}
