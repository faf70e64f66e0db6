#!/usr/bin/env bash
# The wheels the GPU machine lacks (Python 3.12, x86-64, no network; it has torch 2.11, accelerate, peft,
# safetensors, tokenizers, pyarrow, pandas, triton and an older transformers), into a git-ignored folder that
# the device run carries (default .whl/). scripts/gpu_check.py installs them into a target folder there.
#   scripts/gpu_wheels.sh [FOLDER]        (make gpu-wheels)
# The versions are this project's: transformers and trl as the tests pin them, datasets and its two missing
# dependencies, liger-kernel, and deepspeed with its missing dependencies. PyPI has only deepspeed's source, so its
# wheel is built here without compiled ops (DeepSpeed builds what it needs at first use).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=${1:-.whl}
LIMIT_MIB=48  # the device run carries 64 MiB in all, the working tree included
mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two would stop the install there
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DEST" \
  transformers==5.24.0 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 liger-kernel==0.8.5 \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 hjson==3.1.0
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" deepspeed==0.19.8
ls -l "$DEST"/*.whl
kib=$(du -sk "$DEST" | cut -f1)
echo "$DEST: $((kib / 1024)) MiB in $(ls "$DEST"/*.whl | wc -l) wheels"
if [ "$kib" -gt $((LIMIT_MIB * 1024)) ]; then
  echo "over $LIMIT_MIB MiB: the device run could not carry them with the working tree" >&2
  exit 1
fi
