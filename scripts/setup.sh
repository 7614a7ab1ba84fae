#!/usr/bin/env bash
# Installs what dattn needs on a fresh Debian bookworm machine (only what is
# missing), then configures and builds into ./build. Safe to run again.
#
#   scripts/setup.sh            # Release build in ./build
#   BUILD_DIR=out scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}

packages=(cmake ninja-build g++ libgtest-dev zlib1g-dev
          llvm-19-dev llvm-19-tools libmlir-19-dev mlir-19-tools
          clang-19 libclang-rt-19-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The tests compare against NumPy; install it for whichever python3 is first
# on PATH (this may be a pyenv Python, not Debian's).
pip_install() {
  python3 -m pip install --quiet "$@" || python3 -m pip install --quiet --break-system-packages "$@"
}
if ! python3 -c "import numpy" 2>/dev/null; then
  echo "setup: installing numpy for $(command -v python3)"
  pip_install numpy
fi
# nanobind builds the Python package's extension; pytest runs its tests.
for module in nanobind pytest; do
  if ! python3 -c "import $module" 2>/dev/null; then
    echo "setup: installing $module for $(command -v python3)"
    pip_install "$module"
  fi
done
# The NVRTC of CUDA 12, for GPUs before sm_75 (Pascal): CMake records where
# the wheel put libnvrtc.so.12, and the runtime loads it beside NVRTC 13.
if ! python3 -c "import nvidia.cuda_nvrtc" 2>/dev/null; then
  echo "setup: installing nvidia-cuda-nvrtc-cu12 for $(command -v python3)"
  pip_install nvidia-cuda-nvrtc-cu12
fi

if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$BUILD_DIR"
