#!/bin/bash
# Runs the protocols one after the other on one core each time (resumable: run it again
# after a kill) and writes each report next to its results file. From this folder:
#   bash run.sh            # about 3.5 core-hours on the development machine
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p results
for name in berendsen-1600K langevin-1600K nve-1600K heating-300-3000K nve-3200K-start; do
    md-harness run -q "$name.yaml" -o "results/$name.h5"
    md-harness report "results/$name.h5" -p "results/$name" > "results/$name.txt"
done
