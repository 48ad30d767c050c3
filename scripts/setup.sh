#!/usr/bin/env bash
# Create .venv (Python 3.11) and install text2video with its web page (serve) and development tools.
# Idempotent: a second run with an unchanged pyproject.toml returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.setup-stamp
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
# The CPU build of PyTorch, pinned exactly; constraints.txt pins the tested versions of the rest
# (pyproject.toml declares ranges). The dev extra brings pytest, ruff, import-linter and Playwright;
# the serve extra brings Gradio.
pip install -q "torch==2.13.0"
pip install -q -c constraints.txt -e ".[dev,serve]"
# The peer we import checkpoints from and benchmark against. It declares torchvision, which has no
# CPU build here and which it only needs for its data loader: install it without its dependencies.
pip install -q --no-deps "video-diffusion-pytorch==0.7.0" "einops-exts==0.0.4" "rotary-embedding-torch==0.9.1"
echo "$want" > "$stamp"
echo "text2video is installed in .venv (activate with: source .venv/bin/activate)"
