# ruff: noqa: E501  (an experiment kit's table printing)
"""CPU check of fixed_shapes.py: the fixed-shape parts give the unsplit batch's loss and LoRA-free gradients
(tiny random Llama, padded batch of 16 rows, loss summed over tokens / the batch's label count, as
SplitBatches does). Run: .venv/bin/python bench/cuda_graphs/test_fixed_shapes.py"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixed_shapes as fs
import torch
from transformers import LlamaConfig, LlamaForCausalLM

torch.manual_seed(0)
cfg = LlamaConfig(
    vocab_size=200,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    pad_token_id=0,
)
model = LlamaForCausalLM(cfg).float()
model.config._attn_implementation = "sdpa"
n, lengths = 13, [int(x) for x in torch.randint(20, 300, (13,))]  # 13 rows: the last part needs filler rows
T = max(lengths)
ids = torch.zeros(n, T, dtype=torch.long)
mask = torch.zeros(n, T, dtype=torch.long)
for i, length in enumerate(lengths):
    ids[i, :length] = torch.randint(1, 200, (length,))
    mask[i, :length] = 1
labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
labels[:, :5] = -100
batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
items = int((labels[:, 1:] != -100).sum())


def loss_of(inputs):
    out = model(**inputs, num_items_in_batch=items)
    return out.loss


def grads(parts):
    model.zero_grad()
    total = sum(loss_of(p) for p in parts)
    total.backward()
    return total.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


ref_loss, ref = grads([batch])
for budget, buckets, per_part in [(1024, [128, 256, 512], False), (2048, [256, 512], True), (8192, [512], False)]:
    fs.PER_PART[0] = per_part
    parts = fs.fixed_parts(batch, budget, buckets)
    shapes = [tuple(p["input_ids"].shape) for p in parts]
    loss, g = grads(parts)
    worst = max(((g[k] - ref[k]).abs().max() / (ref[k].abs().max() + 1e-12)).item() for k in ref)
    print(
        f"budget {budget} buckets {buckets} per_part {per_part}: parts {shapes}, loss {loss.item():.6f} vs {ref_loss.item():.6f}, "
        f"max relative grad difference {worst:.2e}"
    )
    assert abs(loss.item() - ref_loss.item()) < 1e-4 * abs(ref_loss.item()) and worst < 1e-3, "update changed"
    assert len(set(shapes)) <= (len(buckets) if not per_part else len(buckets)), shapes
print("stats", {k: (dict(v) if hasattr(v, "items") else v) for k, v in fs.STATS.items()})
print("OK")
