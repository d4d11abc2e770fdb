"""`distill gen --teacher openai` throughput against a bare asyncio + openai client loop, same run, same requests.

    .venv/bin/python bench/openai_throughput.py [--chunks 2000] [--concurrency 64] [--rounds 3]

A loopback server in its own process (aiohttp) answers every chat completion at once with valid
JSON (evidence taken from the schema's enum of the chunk's sentences). The same requests, built
by `generate.stage.setup`, are sent twice per round:
- bare: one AsyncOpenAI client, `concurrency` workers, nothing else done with the answers;
- distill: the gen stage after planning (send, cache, validate, curate, split, write files).
It prints items/s of both, their ratio per round (the two runs of a round are back to back, so
a busy machine slows both) and its median (target >= 0.9), and the CPU seconds per item of this
process (all threads; the server's CPU is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# ---------------------------------------------------------------- the server (own process)


def serve(port_out) -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        items = body["response_format"]["json_schema"]["schema"]["properties"]["items"]
        quotes = items["items"]["properties"]["evidence"].get("enum") or ["no sentence to quote"]
        out = []
        for i in range(items["minItems"]):
            quote = quotes[i % len(quotes)]
            out.append({"question": f"Which statement says that {quote[:200].rstrip('.')}?", "evidence": quote, "reasoning": "It is stated.", "answer": quote[:300]})
        content = json.dumps({"items": out})
        message = {"role": "assistant", "content": content}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        usage = {"prompt_tokens": 200, "completion_tokens": 100, "total_tokens": 300}
        return web.json_response({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice], "usage": usage})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "teacher", "object": "model", "owned_by": "bench"}]})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_out.put(site._server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------- the two clients


def make_corpus(folder: Path, chunks: int) -> None:
    rng = random.Random(0)
    vocab = ["".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4))) for _ in range(5000)]
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(max(1, chunks // 50)):
        sentences = [" ".join(rng.choice(vocab) for _ in range(rng.randint(6, 10))).capitalize() + "." for _ in range(100)]
        (folder / f"doc{d}.md").write_text(f"# Topic {d}\n\n" + "\n\n".join(" ".join(sentences[i : i + 4]) for i in range(0, 100, 4)) + "\n")


def bare_loop(url: str, prompts, cfg) -> tuple[float, float]:
    """(wall s, CPU s) of a plain AsyncOpenAI loop sending the same prompts."""
    import openai

    from common.teacher.dialects import response_format

    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0)
        pending = iter(prompts)

        async def worker() -> None:
            for r in pending:
                completion = await client.chat.completions.create(
                    model="teacher", messages=r.messages, max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                    top_p=cfg.top_p, seed=cfg.seed, response_format=response_format(r.schema),
                )  # fmt: skip
                assert completion.choices[0].message.content

        await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))
        await client.close()

    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(run())
    return time.perf_counter() - wall, time.process_time() - cpu


def distill_gen(cfg, plan, out: Path) -> tuple[float, float, dict]:
    """(wall s, CPU s, manifest) of the gen stage after planning, into a fresh output directory."""
    from common.teacher.ask import CachedTeacher
    from generate.curate import curate
    from generate.stage import run, save

    plan.out = out
    out.mkdir(parents=True)
    wall, cpu = time.perf_counter(), time.process_time()
    with CachedTeacher(cfg.teacher, out / "cache.sqlite") as teacher:
        outcome = run(cfg, plan, teacher, show_progress=False)
        curate(cfg, plan, outcome, teacher, show_progress=False)
    manifest = save(cfg, plan, outcome, time.time())
    return time.perf_counter() - wall, time.process_time() - cpu, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from generate.config import GenConfig
    from generate.stage import setup

    ports = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(ports,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{ports.get(timeout=60)}/v1"
    work = Path(tempfile.mkdtemp(prefix="distill-bench-"))
    make_corpus(work / "docs", args.chunks)
    teacher = {"backend": "openai", "model": "teacher", "base_url": [url], "concurrency": args.concurrency}
    cfg = GenConfig(inputs=[str(work / "docs")], out=str(work / "plan"), chunk_tokens=96, chunk_overlap=0, max_chunks=args.chunks, phrasings=1, teacher=teacher)  # one question per item, as the server writes
    plan = setup(cfg, create_out=False)
    items = len(plan.prompts) * cfg.pairs_per_chunk
    print(f"{len(plan.prompts)} requests ({items} items), concurrency {args.concurrency}, server {url}")
    bare_loop(url, plan.prompts[:200], cfg.teacher)  # warm both paths (imports, connections)
    rows = {"bare": [], "distill": []}
    for round_ in range(args.rounds):
        wall, cpu = bare_loop(url, plan.prompts, cfg.teacher)
        rows["bare"].append((items / wall, cpu / items))
        wall, cpu, manifest = distill_gen(cfg, plan, work / f"out{round_}")
        assert manifest["counts"]["sent"] == len(plan.prompts) and not manifest["counts"]["failed_requests"], manifest["counts"]
        rows["distill"].append((items / wall, cpu / items))
        print(f"round {round_}: bare {rows['bare'][-1][0]:.0f} items/s, distill {rows['distill'][-1][0]:.0f} items/s, written {manifest['counts']['train'] + manifest['counts']['test']}")
    median = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in rows.items()}
    for name, (rate, cpu) in median.items():
        print(f"{name:8s} {rate:8.0f} items/s  {cpu * 1e6:7.0f} us CPU/item (median of {args.rounds})")
    paired = [d[0] / b[0] for b, d in zip(rows["bare"], rows["distill"])]
    print(f"ratio distill/bare per round: {' '.join(f'{r:.2f}' for r in paired)}; median {statistics.median(paired):.2f}")
    server.terminate()


if __name__ == "__main__":
    main()
