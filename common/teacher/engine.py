"""A small continuous-batching decode loop over a transformers causal LM (used by the local teacher).

Why not `model.generate`: with one grammar per row and answers of very different lengths,
static batches spend most steps on rows that already finished. Here a finished row leaves the
batch at once and a waiting request takes its place, so every step works on live rows:

    while requests wait or rows run:
        join:   prefill waiting prompts, left-pad the shorter KV cache, stack rows
        sample: grammar mask per row -> temperature / top-p -> accept token
        finish: rows that hit a stop token or their budget leave (yielded at once)
        step:   one forward pass of every live row's last token
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

TOP_K = 64


@dataclass
class Row:
    tag: object  # the caller's handle (a request)
    prompt_ids: list[int]
    budget: int
    matcher: object | None  # xgrammar GrammarMatcher, or None for free text
    make_matcher: Callable[[], object] | None = None  # builds `matcher` when the row joins (grammars compile lazily)
    pos: int = 0  # position id of the next token fed to the model
    tokens: list[int] = field(default_factory=list)
    stopped: bool = False


@dataclass
class Finished:
    tag: object
    tokens: list[int]
    stopped: bool  # False: the budget ran out first
    prompt_tokens: int


class Engine:
    """Continuous batching for one model; `bitmask_fn(rows, logits)` applies grammar masks in place."""

    def __init__(self, model, pad_id: int, stop_ids: list[int], batch_size: int, bitmask_fn: Callable | None = None, repetition_penalty: float = 1.0):
        self.model = model
        self.repetition_penalty = repetition_penalty
        self.pad_id = pad_id
        self.stop_ids = set(stop_ids)
        self.batch_size = batch_size
        self.bitmask_fn = bitmask_fn
        self.refill_at = max(1, batch_size // 4)  # join when this many slots are free: fewer, larger prefills

    @torch.inference_mode()
    def run(self, rows: list[Row], temperature: float, top_p: float, seed: int | None) -> Iterator[Finished]:
        device = self.model.device  # every tensor the loop makes lives there (CPU or a GPU)
        gen = torch.Generator(device=device).manual_seed(seed if seed is not None else torch.seed())
        waiting = deque(sorted(rows, key=lambda r: len(r.prompt_ids)))
        live: list[Row] = []
        cache, mask, logits = None, None, None
        while waiting or live:
            free = self.batch_size - len(live)
            if waiting and (not live or free >= min(self.refill_at, len(waiting))):
                joining = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                cache, mask, logits = self._join(live, cache, mask, logits, joining)
                live += joining
            tokens = self._sample(live, logits, temperature, top_p, gen)
            keep = []
            for i, (row, token) in enumerate(zip(live, tokens.tolist())):
                if self._accept(row, token):
                    keep.append(i)
                else:
                    yield Finished(row.tag, row.tokens, row.stopped, len(row.prompt_ids))
            if len(keep) < len(live):
                live = [live[i] for i in keep]
                if not live:
                    cache, mask, logits = None, None, None
                    continue
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, tokens = mask[index], tokens[index]
                cache, mask = _crop(cache, mask)
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
            positions = torch.tensor([[row.pos] for row in live], device=device)
            for row in live:
                row.pos += 1
            out = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1, :].float()

    def _accept(self, row: Row, token: int) -> bool:
        """Record the token; False when the row is finished (stop token, grammar end or budget)."""
        if token in self.stop_ids:
            row.stopped = True
            return False
        row.tokens.append(token)
        if row.matcher is not None:
            row.matcher.accept_token(token)
            if row.matcher.is_terminated():
                row.stopped = True
                return False
        return len(row.tokens) < row.budget

    def _join(self, live, cache, mask, logits, joining: list[Row]):
        """Prefill the joining prompts (left-padded) and stack them under the live rows."""
        from transformers import DynamicCache

        width = max(len(r.prompt_ids) for r in joining)
        ids = torch.full((len(joining), width), self.pad_id, dtype=torch.long)
        new_mask = torch.zeros((len(joining), width), dtype=torch.long)
        for i, row in enumerate(joining):
            if row.make_matcher is not None:  # compiled now, not for every waiting request up front
                row.matcher, row.make_matcher = row.make_matcher(), None
            n = len(row.prompt_ids)
            ids[i, width - n :] = torch.tensor(row.prompt_ids)
            new_mask[i, width - n :] = 1
            row.pos = n
        ids, new_mask = ids.to(self.model.device), new_mask.to(self.model.device)
        positions = (new_mask.cumsum(-1) - 1).clamp(min=0)
        new_cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=new_mask, position_ids=positions, past_key_values=new_cache, use_cache=True, logits_to_keep=1)
        new_logits = out.logits[:, -1, :].float()
        if cache is None:
            return new_cache, new_mask, new_logits
        return _stack(cache, mask, new_cache, new_mask), _stack_masks(mask, new_mask), torch.cat([logits, new_logits])

    def _sample(self, live: list[Row], logits: torch.Tensor, temperature: float, top_p: float, gen) -> torch.Tensor:
        if self.repetition_penalty != 1.0:
            self._penalize(live, logits)
        if self.bitmask_fn is not None:
            self.bitmask_fn(live, logits)
        if temperature <= 0:
            return logits.argmax(dim=-1)
        # sample among the TOP_K most likely tokens (as transformers' default top_k=50 does): sorting
        # and drawing from 64 candidates instead of the whole vocabulary is most of a step's overhead
        top, order = logits.topk(min(TOP_K, logits.shape[-1]), dim=-1)
        probs = F.softmax(top / temperature, dim=-1)
        if top_p < 1.0:
            probs[probs.cumsum(-1) - probs > top_p] = 0
        choice = torch.multinomial(probs, 1, generator=gen)
        return order.gather(-1, choice).squeeze(-1)


    def _penalize(self, live: list[Row], logits: torch.Tensor) -> None:
        """CTRL-style repetition penalty on the tokens each row has generated (small models loop without it)."""
        p = self.repetition_penalty
        for i, row in enumerate(live):
            if row.tokens:
                seen = torch.tensor(row.tokens, device=logits.device).unique()
                values = logits[i, seen]
                logits[i, seen] = torch.where(values > 0, values / p, values * p)


DECODE_ATTENTION = "distill_decode"


def decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention for one new token per row with grouped KV heads, as two einsums.

    transformers' SDPA path repeats the KV heads and, in bf16 on CPU, falls back to a slow
    kernel: 18 ms a layer at batch 32 x 700 cached tokens here, against 2 ms for this.
    Prefill (many query tokens) keeps using SDPA.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    batch, heads, _, dim = query.shape
    groups = heads // key.shape[1]
    scores = torch.einsum("bhgd,bhld->bhgl", query.view(batch, key.shape[1], groups, dim), key) * (scaling or dim**-0.5)
    if attention_mask is not None:
        keep = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
        scores = scores.masked_fill(~keep[..., -1:, : key.shape[2]].reshape(batch, 1, 1, -1), float("-inf"))
    probs = scores.float().softmax(dim=-1).to(value.dtype)
    out = torch.einsum("bhgl,bhld->bhgd", probs, value).reshape(batch, heads, 1, dim)
    return out.transpose(1, 2).contiguous(), None


def register_decode_attention() -> str:
    """Make `attn_implementation=DECODE_ATTENTION` available to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(DECODE_ATTENTION, decode_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    return DECODE_ATTENTION


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _stack_masks(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    width = max(a.shape[1], b.shape[1])
    return torch.cat([_left_pad(a, width, 1), _left_pad(b, width, 1)])


def _stack(cache, mask, new_cache, new_mask):
    """Stack two DynamicCaches along the batch, left-padding the shorter sequence dimension."""
    width = max(mask.shape[1], new_mask.shape[1])
    for old, new in zip(cache.layers, new_cache.layers):
        old.keys = torch.cat([_left_pad(old.keys, width, 2), _left_pad(new.keys, width, 2)])
        old.values = torch.cat([_left_pad(old.values, width, 2), _left_pad(new.values, width, 2)])
    return cache


def _crop(cache, mask: torch.Tensor):
    """Drop leading columns that are padding for every live row (they only cost time)."""
    lead = int((mask.cumsum(dim=1) == 0).sum(dim=1).min())
    if lead == 0:
        return cache, mask
    for layer in cache.layers:
        layer.keys = layer.keys[:, :, lead:, :]
        layer.values = layer.values[:, :, lead:, :]
    return cache, mask[:, lead:]
