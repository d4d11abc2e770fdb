#!/usr/bin/env bash
# Here, on a machine with a package index and `make install` done: what an offline CUDA host (Python 3.12 with
# torch, transformers, peft and accelerate already there) needs to run distill's GPU tests and GPU benches.
#   .gpu/site.tgz  Unsloth, TRL, bitsandbytes, datasets, ... and distill's pure-Python dependencies, pytest too,
#                  built by gpu-bundle.sh (GPU_BUNDLE, default ../shared/tools/gpu-bundle.sh)
#   .tok/models/SmolLM2-135M-Instruct  the embedded model's config and tokenizer, no weights (3 MB): the GPU
#                  tests' DISTILL_TEST_TOKENIZER and the benches' tokenizer (their models are built from configs)
# Both folders are git-ignored. Then, on the host: bash bench/gpu_host/run.sh COMMAND... (see there).
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=${GPU_BUNDLE:-../shared/tools/gpu-bundle.sh}
[ -f "$bundle" ] || { echo "no bundle script at $bundle: set GPU_BUNDLE to gpu-bundle.sh" >&2; exit 1; }
[ -x .venv/bin/python ] || { echo "no .venv: run make install first" >&2; exit 1; }
# distill's dependencies that such a host lacks (pyproject.toml), with theirs; the host has numpy, yaml, requests
bash "$bundle" .gpu pydantic pydantic-core annotated-types typing-inspection jsonschema jsonschema-specifications \
  referencing rpds-py attrs fastjsonschema openai httpx httpcore h11 anyio sniffio distro jiter pypdf python-docx lxml \
  beautifulsoup4 soupsieve gguf xgrammar datasketch tenacity click rich markdown-it-py mdurl pygments \
  pytest pytest-timeout pluggy iniconfig
home=$(mktemp -d); trap 'rm -rf "$home"' EXIT
dir=$(DISTILL_HOME=$home .venv/bin/python -c "from common.models import embedded_dir; print(embedded_dir())")
rm -rf .tok && mkdir -p .tok/models/SmolLM2-135M-Instruct
find "$dir" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} .tok/models/SmolLM2-135M-Instruct/ \;
du -sh .gpu .tok
