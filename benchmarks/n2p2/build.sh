#!/bin/sh
# Build n2p2's libnnp (OpenMP, no MPI) and the predict() timer used by
# benchmarks/bpnn_speed.py --n2p2.
#
#   sh benchmarks/n2p2/build.sh N2P2_SOURCE_DIR
#
# N2P2_SOURCE_DIR is a checkout of https://github.com/CompPhysVienna/n2p2 (only src/ is
# needed). Needs g++ and Eigen's headers (libnnp needs no GSL): apt-get install libeigen3-dev,
# or without root `pip download --no-deps cmeel-eigen`, unzip the wheel and set
# EIGEN=<unzipped>/cmeel.prefix/include/eigen3.
# Writes benchmarks/n2p2/predict_timer next to this script.
set -e
src=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
eigen=${EIGEN:-/usr/include/eigen3}
mkdir -p "$src/include" "$src/lib" "$src/bin"
flags="-O3 -march=native -std=c++11 -fopenmp"
options="-DN2P2_NO_MPI -DNDEBUG -DEIGEN_DONT_PARALLELIZE"
(cd "$src/src/libnnp" && make -j2 COMP=gnu PROJECT_EIGEN="$eigen" PROJECT_CFLAGS="$flags" PROJECT_OPTIONS="$options")
g++ $flags $options -I"$src/include" -I"$eigen" "$here/predict_timer.cpp" \
    -L"$src/lib" -lnnp -o "$here/predict_timer"
echo "built $here/predict_timer"
