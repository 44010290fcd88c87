#!/usr/bin/env bash
# `make gpu`: the CUDA builds in .venv (after `make setup`), for a machine with an NVIDIA driver.
#  - onnxruntime-gpu (the `gpu` extra) in place of onnxruntime: WD14 taggers, YOLO detectors, CCIP;
#  - torch 2.13.0 built for CUDA 12.8 from PyTorch's index in place of the CPU build: the face and
#    Isaac trainers, and Keras when KERAS_BACKEND=torch (the classifier, DeepDanbooru projects).
# Undo with `rm .venv/.installed && make setup` (it reinstalls the CPU builds).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}"
.venv/bin/python -m pip uninstall --yes --quiet onnxruntime || true
.venv/bin/python -m pip install --quiet -e '.[gpu]'
.venv/bin/python -m pip install --quiet --force-reinstall --no-deps "torch==2.13.0" --index-url "$TORCH_INDEX"
.venv/bin/python - <<'PY'
import onnxruntime, torch
print("onnxruntime providers:", ", ".join(onnxruntime.get_available_providers()))
print("torch", torch.__version__, "CUDA:", torch.cuda.is_available() and torch.cuda.get_device_name(0))
PY
echo "Set KERAS_BACKEND=torch for Keras models on the GPU; bench/gpu.py measures the three model stages."
