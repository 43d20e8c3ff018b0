#!/usr/bin/env bash
# Accuracy at equal CPU time: our default 3BPA model against a MACE model trained by MACE's own
# trainer (mace_run_train), on the same 450/50 split of train_300K.xyz (split seed 0), for the
# same wall-clock budget, side by side on the 2-core machine: each trainer runs single-threaded
# on its own core at the same time (so each gets one core for BUDGET_S seconds).
#
#   MACE_VENV=/path/to/venv-with-mace-torch BUDGET_S=1800 OUT=/tmp/race bash benchmarks/train_race_mace.sh
#   python benchmarks/train_race_report.py OUT        # errors at equal time (needs both venvs)
#
# MACE runs from its own environment (mace-torch 0.3.16 pins e3nn 0.4.4; ase-nnip works there
# too). MACE has no wall-time option: it is stopped with SIGTERM at the budget, then restarted
# from its last checkpoint with max_num_epochs = that epoch, which trains no further and writes
# the model file.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/race}
budget=${BUDGET_S:-1800}
mace_venv=${MACE_VENV:?set MACE_VENV to a virtual environment with mace-torch}
mkdir -p "$out"
python "$here/benchmarks/train_race_report.py" "$out" --write-data

ase-nnip train "$here/examples/3bpa/train.yaml" -q -o "$out/ours" --seeds 0 \
    --set training.epochs=100000 --set training.time_limit_s="$budget" --set training.num_threads=1 \
    > "$out/ours.log" 2>&1 &
ours=$!

mace_args=(--name mace --train_file "$out/train.xyz" --valid_file "$out/val.xyz"
    --energy_key REF_energy --forces_key REF_forces --E0s "$(cat "$out/e0s.txt")"
    --model MACE --hidden_irreps '32x0e + 32x1o' --r_max 5.0 --max_L 1 --correlation 3
    --num_interactions 2 --batch_size 5 --valid_batch_size 10 --device cpu --default_dtype float32
    --seed 0 --eval_interval 1 --checkpoints_dir "$out/mace_ckpt" --model_dir "$out/mace_model"
    --results_dir "$out/mace_results" --log_dir "$out/mace_logs")
(
    # shellcheck disable=SC1091
    . "$mace_venv/bin/activate"
    export OMP_NUM_THREADS=1 TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
    timeout -s TERM "$budget" mace_run_train "${mace_args[@]}" --max_num_epochs 100000 > "$out/mace.log" 2>&1 || true
    last=$(ls "$out/mace_ckpt" | sed -n 's/.*_epoch-\([0-9]*\).*/\1/p' | sort -n | tail -1)
    echo "MACE stopped after epoch $last" >> "$out/mace.log"
    mace_run_train "${mace_args[@]}" --restart_latest --max_num_epochs "$last" >> "$out/mace.log" 2>&1
) &
mace=$!
wait "$ours" "$mace"
echo "done: $out"
