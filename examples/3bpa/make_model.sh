#!/usr/bin/env bash
# Remakes the shipped example: model.nnip, model.ltau and ground_state.xyz (see README.md here).
#
#   bash examples/3bpa/make_model.sh                # about 75 min on 2 cores
#   RUNS=/tmp/runs OUT=/tmp/out EPOCHS=2 bash examples/3bpa/make_model.sh   # a dry run (minutes)
#
# Three ensemble members (seeds 0, 1, 2) on the 450/50 split of train_300K.xyz (split seed 0),
# trained as three single-threaded processes at once: on 2 cores this finishes sooner than one
# process with two threads or two lanes of 2 + 1 members. Re-running resumes unfinished members
# (RESUME=0 to refuse).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
runs=${RUNS:-$here/runs}     # training output
out=${OUT:-$here}           # where model.nnip, model.ltau, ground_state.xyz go
mkdir -p "$out"
epochs=${EPOCHS:-150}
resume=$([ "${RESUME:-1}" = 1 ] && [ -d "$runs" ] && echo --resume || true)
train=(ase-nnip train "$here/train.yaml" -q --set training.epochs="$epochs" --set training.num_threads=1)

start=$(date +%s)
pids=()
for seed in 0 1 2; do
    "${train[@]}" -o "$runs/seed-$seed" --seeds "$seed" $resume &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done   # set -e: a failed member stops the script
echo "training: $(( $(date +%s) - start )) s"

best=$(python "$here/pick.py" best-member "$runs"/seed-*)
cp "$best" "$out/model.nnip"
mkdir -p "$out/members"
for seed in 0 1 2; do cp "$runs/seed-$seed/member_0/best.nnip" "$out/members/seed-$seed.nnip"; done

# LTAU: confidences from all members' error trajectories, descriptors from the shipped model.
ase-nnip ltau build "$out/model.nnip" -o "$out/model.ltau" \
    --trajectories "$runs"/seed-*/member_*/error_trajectory.h5
# Calibration: s(d, D) fitted on half of the 300/600/1200 K frames of calibration_mixedT.xyz
# (split seed 0, within each energy bin), reported on the other half; then the 300 K
# validation frames with that calibration (nothing fitted on them).
data=$here/../../../shared/data/3bpa
ase-nnip ltau calibrate "$out/model.nnip" "$out/model.ltau" "$data/calibration_mixedT.xyz" \
    --bins 0.75,2.1 --k 8 -o "$runs/calibration-mixedT" --save "$out/model.ltau"
python "$here/pick.py" validation-frames "$runs/seed-0" "$runs/validation.xyz"
ase-nnip ltau calibrate "$out/model.nnip" "$out/model.ltau" "$runs/validation.xyz" --fit-fraction 0 \
    -o "$runs/calibration-validation300K"

# Ground state: the lowest-energy training frame, relaxed with the shipped model.
python "$here/pick.py" lowest-energy-frame "$runs/seed-0" "$runs/lowest_energy_frame.xyz"
ase-nnip relax "$out/model.nnip" "$runs/lowest_energy_frame.xyz" --ltau "$out/model.ltau" \
    --fmax 0.01 --steps 1000 -o "$out/ground_state.xyz" --summary "$runs/ground_state_summary.csv"
ls -l "$out/model.nnip" "$out/model.ltau" "$out/ground_state.xyz"
