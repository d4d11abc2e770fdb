"""The continuous-batching engine decodes exactly what transformers' generate decodes, one prompt at a time."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from common.teacher.engine import Engine, Row

PAD, STOP = 0, 1


@pytest.fixture(scope="module")
def tiny_lm():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


def reference(model, prompt: list[int], budget: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget, do_sample=False,
                         eos_token_id=STOP, pad_token_id=PAD)
    tokens = out[0, len(prompt):].tolist()
    return tokens[: tokens.index(STOP)] if STOP in tokens else tokens


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
def test_engine_matches_generate_greedy(tiny_lm, batch_size):
    prompts = [[5, 6, 7], [9] * 11, [3, 4], list(range(2, 30)), [12, 13, 14, 15, 16], [40] * 6, [8]]
    budgets = [5, 17, 9, 12, 3, 20, 7]
    rows = [Row(i, p, b, None) for i, (p, b) in enumerate(zip(prompts, budgets))]
    engine = Engine(tiny_lm, PAD, [STOP], batch_size)
    done = {f.tag: f for f in engine.run(rows, temperature=0.0, top_p=1.0, seed=0)}
    assert sorted(done) == list(range(len(prompts)))
    for i, (prompt, budget) in enumerate(zip(prompts, budgets)):
        expected = reference(tiny_lm, prompt, budget)
        assert done[i].tokens == expected, f"prompt {i}"
        assert done[i].prompt_tokens == len(prompt)
        assert len(done[i].tokens) <= budget


def test_engine_sampling_is_seeded(tiny_lm):
    def sample(seed):
        rows = [Row(i, [5, 6, 7 + i], 10, None) for i in range(4)]
        return {f.tag: f.tokens for f in Engine(tiny_lm, PAD, [STOP], 2).run(rows, 1.0, 0.9, seed)}

    assert sample(3) == sample(3)
    assert sample(3) != sample(4)


def test_decode_attention_matches_sdpa(tiny_lm):
    """The einsum decode attention gives the same greedy tokens as transformers' SDPA."""
    from transformers import LlamaForCausalLM

    from common.teacher.engine import register_decode_attention

    fast = LlamaForCausalLM(tiny_lm.config).eval()
    fast.load_state_dict(tiny_lm.state_dict())
    fast.set_attn_implementation(register_decode_attention())
    assert fast.config._attn_implementation == "distill_decode"
    prompts = [[5, 6, 7], [9] * 11, list(range(2, 30)), [40] * 6]
    def run(model):
        rows = [Row(i, p, 12, None) for i, p in enumerate(prompts)]
        return {f.tag: f.tokens for f in Engine(model, PAD, [STOP], 3).run(rows, 0.0, 1.0, 0)}
    assert run(fast) == run(tiny_lm)


def test_grammar_matchers_are_made_when_rows_join(tiny_lm):
    """Waiting requests cost no grammar compilation: a row's matcher is built as it joins the batch."""
    made = []

    def factory(i):
        return lambda: made.append(i)  # a None matcher: free text

    rows = [Row(i, [5, 6, 7 + i], 4, None, factory(i)) for i in range(6)]
    finished = Engine(tiny_lm, PAD, [STOP], 2).run(rows, 0.0, 1.0, 0)
    next(finished)
    assert len(made) == 2  # the first two rows only
    rest = list(finished)
    assert len(rest) == 5 and sorted(made) == list(range(6))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_engine_runs_on_a_gpu(tiny_lm):
    """Every tensor of the loop follows the model to the GPU (prompts, positions, the rows kept, the
    repetition penalty, the sampler's generator): greedy tokens equal the CPU engine's."""
    import copy

    gpu = copy.deepcopy(tiny_lm).cuda()
    prompts = [[5, 6, 7], [9] * 11, list(range(2, 30)), [40] * 6, [8]]

    def run(model, temperature):
        rows = [Row(i, p, 12, None) for i, p in enumerate(prompts)]
        return {f.tag: f.tokens for f in Engine(model, PAD, [STOP], 3, repetition_penalty=1.2).run(rows, temperature, 0.9, 0)}

    assert run(gpu, 0.0) == run(tiny_lm, 0.0)
    sampled = run(gpu, 1.0)
    assert sorted(sampled) == list(range(len(prompts))) and all(len(t) <= 12 for t in sampled.values())
