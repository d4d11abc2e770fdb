# ruff: noqa: E501  (an experiment kit's table printing)
"""CPU-only: the micro-batch shapes the bench's `gpu` data gives distill's default split (train/trainer.py
split_rows, max_batch_tokens 8192) against the fixed-shape menu of bench/cuda_graphs/sitecustomize.py, over the
first N steps of a group_by_length sampler (batch 16, 800 long records, seed 0). Prints distinct shapes,
parts a step and the padded share. Usage: python bench/cuda_graphs/sim_shapes.py [steps] [buckets] [budget]"""

import collections
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench/cuda_graphs")]
import os

import fixed_shapes as fs
import torch
import train_throughput as tt
from transformers import AutoTokenizer
from transformers.trainer_pt_utils import get_length_grouped_indices

from common.models import resolve_model
from train.data import apply_template, encode

fs.PER_PART[0] = os.environ.get("DISTILL_SHAPE_PER_PART") == "1"

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
buckets = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else fs.DEFAULT_BUCKETS).split(",")]
budget = int(sys.argv[3]) if len(sys.argv) > 3 else 8192
tok = AutoTokenizer.from_pretrained(resolve_model("embedded"))
apply_template(tok, None)
folder = tt.make_data(Path(tempfile.mkdtemp()) / "data", 800, trace=tt.LENGTHS["long"])
import json

rows = [json.loads(x) for x in (folder / "train.jsonl").read_text().splitlines()]
lengths = [len(encode(tok, r, "closed-book")["input_ids"]) for r in rows]
print(f"records {len(lengths)}: length min {min(lengths)} median {sorted(lengths)[400]} max {max(lengths)}")
g = torch.Generator()
g.manual_seed(0)
order = get_length_grouped_indices(lengths, 16, generator=g)
from train.trainer import part_size

default, fixed = collections.Counter(), collections.Counter()
real = padded_default = padded_fixed = parts_d = parts_f = 0
for s in range(steps):
    ls = [lengths[i] for i in order[s * 16 : (s + 1) * 16]]
    real += sum(ls)
    n, longest = len(ls), max(ls)
    size = n if n * longest <= budget else part_size(longest, n, budget)
    srt = sorted(ls, reverse=True)
    for i in range(0, n, size):
        p = srt[i : i + size]
        default[(len(p), max(p))] += 1
        padded_default += len(p) * max(p)
        parts_d += 1
    for shape in fs.plan(list(ls), budget, buckets)[1]:
        fixed[shape] += 1
        padded_fixed += shape[0] * shape[1]
        parts_f += 1
print(f"{steps} steps, {real} real tokens ({real / steps:.0f} a step)")
print(
    f"default split: {len(default)} distinct (rows, length) shapes, {parts_d / steps:.2f} parts a step, padded tokens {padded_default / real:.3f}x real"
)
print(
    f"fixed menu {buckets} budget {budget}: {len(fixed)} shapes {sorted(fixed.items())}, {parts_f / steps:.2f} parts a step, padded tokens {padded_fixed / real:.3f}x real"
)
