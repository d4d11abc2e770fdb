#!/usr/bin/env bash
# On an offline CUDA host, in the repository root, with .gpu and .tok made by bench/gpu_host/prepare.sh:
# unpacks the bundle into /tmp/site once, sets the environment, prints the card and the host CPU, and runs
# the command given, e.g.
#   bash bench/gpu_host/run.sh python3 -m pytest -q -m gpu tests/test_train_gpu.py tests/test_grpo_gpu.py
#   bash bench/gpu_host/run.sh python3 bench/train_throughput.py gpu --run "trl lora" --run "distill lora" --rounds 2
# (the benches run an uncounted warm-up round first: the first run of each kind on a fresh machine reads slow).
set -uo pipefail
cd "$(dirname "$0")/../.."
[ -f .gpu/site.tgz ] && [ -d .tok/models ] || { echo "no .gpu/site.tgz or .tok: run bench/gpu_host/prepare.sh first" >&2; exit 1; }
[ -d /tmp/site/unsloth ] || { mkdir -p /tmp/site && tar xzf .gpu/site.tgz -C /tmp/site; } || exit 1
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} DISTILL_HOME=$PWD/.tok PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false DISTILL_TEST_TOKENIZER=$PWD/.tok/models/SmolLM2-135M-Instruct
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) x $(nproc), $(grep -o -w -m1 -E 'avx512f|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')$(date -u +%FT%TZ)"
"$@"
