#!/usr/bin/env bash
# Reproduce the bundled default screening models (fastgap/models/default/):
#   1. featurize mp_gap36k into a feature store            (fastgap featurize)
#   (with PRETRAIN_CONFIG: pretrain one model per PRETRAIN_SEEDS seed; the *FT_SEEDS members
#   are fine-tuned from them: an entry N:P is seed N started from pretrained seed P, a bare N
#   starts from the first pretrained seed)
#   2. train the band-gap regressors, one per seed          (fastgap train, gaps > 0)
#   3. train the metal / non-metal classifier(s)            (fastgap train, target is_metal)
#   4. pack them into a bundle with card.json               (fastgap.bundle_card.pack_bundle)
#   5. fit the ensemble-std scale on the validation split, evaluate on the fixed test split,
#      write both into the card and MODEL_CARD.md
# Finished runs (a run directory with metrics.json) are kept and interrupted ones continue
# from their last epoch, so the script resumes where it stopped; JOBS trainings run side by
# side (one torch thread each is fastest on small CPUs).
# Every setting is a variable below and can be overridden from the environment, e.g. a
# quick end-to-end check:  LIMIT=300 EPOCHS=2 WORK=/tmp/fg BUNDLE=/tmp/fg/bundle \
#                          scripts/train_default_models.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${DATA:-/work/shared/data/mp_gap36k/structures.jsonl.gz}"
SPLIT="${SPLIT:-$REPO/benchmarks/splits/mp_gap36k.json}"
WORK="${WORK:-$REPO/runs/default_models}"          # store + training runs
BUNDLE="${BUNDLE:-$REPO/fastgap/models/default}"   # where the bundle is written
FASTGAP="${FASTGAP:-fastgap}"
PYTHON="${PYTHON:-python}"
LIMIT="${LIMIT:-0}"                # use only the first LIMIT records (0 = all)
GAP_CONFIG="${GAP_CONFIG:-$REPO/benchmarks/configs/gap_best.toml}"  # regressor model (TOML)
CLS_CONFIG="${CLS_CONFIG:-}"       # classifier model (TOML; empty = the design's model)
EPOCHS="${EPOCHS:-15}"             # regressors
CLS_EPOCHS="${CLS_EPOCHS:-25}"     # classifier(s)
PATIENCE="${PATIENCE:-8}"
BATCH_SIZE="${BATCH_SIZE:-64}"
MAX_Z="${MAX_Z:-85}"
SEEDS="${SEEDS-1 2 3 4 5}"         # one regressor per seed, from scratch (may be empty)
CLS_SEEDS="${CLS_SEEDS:-0}"        # one classifier per seed
CLS_CONFIG_B="${CLS_CONFIG_B:-}"   # optional second classifier model (TOML) ...
CLS_SEEDS_B="${CLS_SEEDS_B:-}"     # ... one more classifier per seed (runs metal_b_seedN)
WORKERS="${WORKERS:-2}"            # featurize processes
THREADS="${THREADS:-1}"            # torch threads per training (0 = torch default)
JOBS="${JOBS:-2}"                  # trainings run at the same time
RESULTS="${RESULTS:-}"             # e.g. benchmarks/RESULTS.md: write the test metrics there too
PRETRAIN_CONFIG="${PRETRAIN_CONFIG:-}"  # e.g. benchmarks/configs/pretrain_phys.toml (empty = none)
PRETRAIN_SPLIT="${PRETRAIN_SPLIT:-$REPO/benchmarks/splits/mp_gap36k_pretrain.json}"
PRETRAIN_SEEDS="${PRETRAIN_SEEDS:-0}"  # one pretrained model per seed (runs pretrain_seedN)
FT_LR="${FT_LR:-1e-3}"             # learning rate of the fine-tunes
FT_EPOCHS="${FT_EPOCHS:-$EPOCHS}"  # epochs of the fine-tuned regressors
FT_SEEDS="${FT_SEEDS:-}"           # fine-tuned regressors, N or N:P each (runs gap_ft_seedN)
CLS_FT_SEEDS="${CLS_FT_SEEDS:-}"   # fine-tuned CLS_CONFIG classifiers, N or N:P (metal_ft_seedN)
CLS_FT_SEEDS_B="${CLS_FT_SEEDS_B:-}"  # fine-tuned CLS_CONFIG_B classifiers (metal_b_ft_seedN)

source "$REPO/scripts/bundle_common.sh"
mkdir -p "$WORK"
INPUT="$DATA"
if [ "$LIMIT" -gt 0 ]; then
  INPUT="$WORK/first_${LIMIT}.jsonl"
  first_records "$DATA" "$INPUT" "$LIMIT"
fi
STORE="$WORK/store"
"$FASTGAP" featurize "$INPUT" --out "$STORE" --workers "$WORKERS" --no-progress

# run_train OUT ARGS...: train unless OUT already holds a finished run (an interrupted run
# continues from its last epoch); at most JOBS at once
run_train() {
  local out="$1"; shift
  [ -f "$out/metrics.json" ] && return 0
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done  # a failure shows later
  local omp=(); [ "$THREADS" -gt 0 ] && omp=(env OMP_NUM_THREADS="$THREADS")
  local resume=(); [ -f "$out/last_state.pt" ] && resume=(--resume)
  "${omp[@]}" "$FASTGAP" train "$@" "${resume[@]}" --out "$out" >> "$out.log" 2>&1 &
}

common=(--store "$STORE" --max-z "$MAX_Z" --split-file "$SPLIT" --patience "$PATIENCE"
        --batch-size "$BATCH_SIZE" --threads "$THREADS" --device cpu --no-progress)
pretrained=()
if [ -n "$PRETRAIN_CONFIG" ]; then  # every fine-tuned member below waits for these
  for seed in $PRETRAIN_SEEDS; do
    run_train "$WORK/pretrain_seed$seed" --config "$PRETRAIN_CONFIG" --store "$STORE" \
      --split-file "$PRETRAIN_SPLIT" --threads "$THREADS" --device cpu --no-progress --seed "$seed"
    pretrained+=("$WORK/pretrain_seed$seed")
  done
  wait
  for run in "${pretrained[@]}"; do
    [ -f "$run/metrics.json" ] || { echo "pretraining failed (see $run.log)" >&2; exit 1; }
  done
elif [ -n "$FT_SEEDS$CLS_FT_SEEDS$CLS_FT_SEEDS_B" ]; then
  echo "FT_SEEDS / CLS_FT_SEEDS / CLS_FT_SEEDS_B need PRETRAIN_CONFIG" >&2; exit 1
fi
# member_args SPEC FINETUNE: sets `seed` and the array `init` (the --init-from arguments of a
# fine-tuned member) from SPEC = N, or N:P = seed N fine-tuned from pretrained seed P
member_args() {
  seed="${1%%:*}"; init=()
  [ "$2" = ft ] || return 0
  local from; read -r from _ <<< "$PRETRAIN_SEEDS"
  [[ "$1" == *:* ]] && from="${1#*:}"
  [[ " $PRETRAIN_SEEDS " == *" $from "* ]] || {
    echo "$1: pretrained seed $from is not in PRETRAIN_SEEDS='$PRETRAIN_SEEDS'" >&2; exit 1; }
  init=(--init-from "$WORK/pretrain_seed$from" --lr "$FT_LR")
}
gap_runs=()
# regressors NAME SEEDS FINETUNE EPOCHS: one band-gap run per seed in $WORK/NAME_seedN
regressors() {
  local name="$1" spec seed init=()
  for spec in $2; do
    member_args "$spec" "$3"
    run_train "$WORK/${name}_seed$seed" --config "$GAP_CONFIG" "${common[@]}" \
      --target band_gap_eV --where "band_gap_eV > 0" --epochs "$4" --seed "$seed" \
      ${init[@]+"${init[@]}"}
    gap_runs+=("$WORK/${name}_seed$seed")
  done
}
# fine-tuned members first (each more accurate than a scratch one on validation), so that
# `fastgap predict --members N` / `--fast` keep them
regressors gap_ft "$FT_SEEDS" ft "$FT_EPOCHS"
regressors gap "$SEEDS" scratch "$EPOCHS"
[ "${#gap_runs[@]}" -ge 1 ] || { echo "no band-gap regressor: set SEEDS or FT_SEEDS" >&2; exit 1; }
metal_runs=()
# classifiers NAME CONFIG SEEDS FINETUNE: one is_metal run per seed in $WORK/NAME_seedN
# (CONFIG empty = the design's model)
classifiers() {
  local name="$1" config="$2" spec seed init=()
  for spec in $3; do
    member_args "$spec" "$4"
    run_train "$WORK/${name}_seed$seed" ${config:+--config "$config"} "${common[@]}" \
      --target is_metal --epochs "$CLS_EPOCHS" --seed "$seed" ${init[@]+"${init[@]}"}
    metal_runs+=("$WORK/${name}_seed$seed")
  done
}
[ -z "$CLS_SEEDS_B$CLS_FT_SEEDS_B" ] || [ -n "$CLS_CONFIG_B" ] || {
  echo "CLS_SEEDS_B / CLS_FT_SEEDS_B need CLS_CONFIG_B" >&2; exit 1; }
classifiers metal_ft "$CLS_CONFIG" "$CLS_FT_SEEDS" ft
classifiers metal_b_ft "$CLS_CONFIG_B" "$CLS_FT_SEEDS_B" ft
classifiers metal "$CLS_CONFIG" "$CLS_SEEDS" scratch
classifiers metal_b "$CLS_CONFIG_B" "$CLS_SEEDS_B" scratch

wait
for run in "${gap_runs[@]}" "${metal_runs[@]}"; do
  [ -f "$run/metrics.json" ] || { echo "training failed: $run (see $run.log)" >&2; exit 1; }
done

COMMAND="GAP_CONFIG=$(basename "$GAP_CONFIG") CLS_CONFIG=${CLS_CONFIG:+$(basename "$CLS_CONFIG")} LIMIT=$LIMIT EPOCHS=$EPOCHS CLS_EPOCHS=$CLS_EPOCHS PATIENCE=$PATIENCE BATCH_SIZE=$BATCH_SIZE MAX_Z=$MAX_Z SEEDS='$SEEDS' CLS_SEEDS='$CLS_SEEDS'${CLS_CONFIG_B:+ CLS_CONFIG_B=$(basename "$CLS_CONFIG_B") CLS_SEEDS_B='$CLS_SEEDS_B'}${PRETRAIN_CONFIG:+ PRETRAIN_CONFIG=$(basename "$PRETRAIN_CONFIG") PRETRAIN_SEEDS='$PRETRAIN_SEEDS' FT_LR=$FT_LR FT_EPOCHS=$FT_EPOCHS FT_SEEDS='$FT_SEEDS' CLS_FT_SEEDS='$CLS_FT_SEEDS' CLS_FT_SEEDS_B='$CLS_FT_SEEDS_B'} scripts/train_default_models.sh"
"$PYTHON" - "$BUNDLE" "$DATA" "$SPLIT" "$COMMAND" "$LIMIT" "$MAX_Z" "${#gap_runs[@]}" \
  "${gap_runs[@]}" "${metal_runs[@]}" <<'PY'
import sys
from fastgap.bundle_card import pack_bundle, source_fields
bundle, data, split, command, limit, max_z, n_gap, *runs = sys.argv[1:]
gap, metal = runs[: int(n_gap)], runs[int(n_gap):]
card = {
    "name": "fastgap default screening ensemble",
    **source_fields(data, split, int(limit)),
    "filters": {"band_gap": f"band_gap_eV > 0, max_z {max_z}", "metal": f"all, max_z {max_z}"},
    "command": command,
}
print(pack_bundle(bundle, gap, metal, card))
PY
calibrate=(); [ "${#gap_runs[@]}" -ge 2 ] && calibrate=(--calibrate)  # needs an ensemble std
"$PYTHON" "$REPO/scripts/evaluate_screening.py" --model "$BUNDLE" --store "$STORE" \
  --split "$SPLIT" --out "$WORK/evaluation" --card "${calibrate[@]}" ${RESULTS:+--results "$RESULTS"}
