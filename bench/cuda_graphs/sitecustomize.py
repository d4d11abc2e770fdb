"""Experiment-only hook for issue 26 (CUDA graphs over Unsloth's compiled decoder blocks). NOT part of distill.

Put this folder first on PYTHONPATH. Without any of the variables below it does nothing (no import hook).
  DISTILL_FIXED_SHAPES=N|1   train every padded micro-batch as parts of a few fixed shapes (fixed_shapes.py),
                             N tokens a part at most (1: the run's max_batch_tokens, 8192 if none)
  DISTILL_SHAPE_BUCKETS=...  the padded lengths allowed (default fixed_shapes.DEFAULT_BUCKETS)
  DISTILL_SHAPE_PER_PART=1   each part padded to the bucket over its own longest row (more shapes, less padding)
  DISTILL_RERECORD_LIMIT=N   torch._inductor.config.triton.cudagraph_unexpected_rerecord_limit (default 128):
                             22 decoder blocks share one compiled function with different parameters
  DISTILL_HF_COMPILE=MODE    the Trainer compiles the whole model (transformers' torch_compile, inductor, this
                             mode, e.g. reduce-overhead: CUDA graph trees over forward and backward); for backend=hf
  DISTILL_GRAPH_STATS=1      count CUDA graph captures and replays, Inductor's cudagraph skips, Dynamo's graphs
Any of them: at exit the stats go to DISTILL_HOOK_DIR/stats-<DISTILL_TAG>.json and the run's metrics.jsonl
to DISTILL_HOOK_DIR/metrics-<DISTILL_TAG>.jsonl (default folder /tmp/graphs; tag: the pid).
The Unsloth switch itself (UNSLOTH_BLOCK_CUDAGRAPHS=1, UNSLOTH_BLOCK_CUDAGRAPHS_MAX_SHAPES=N) needs no hook.
Any other sitecustomize further on sys.path is still run.
"""

import os
import sys

_KEYS = ("DISTILL_FIXED_SHAPES", "DISTILL_RERECORD_LIMIT", "DISTILL_GRAPH_STATS", "DISTILL_HF_COMPILE")
_ON = any(os.environ.get(k) for k in _KEYS)
_TARGETS = ("train.trainer", "train.sft")
_COUNTS = {"captures": 0, "replays": 0}


def _chain_other_sitecustomize():
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None or not spec.origin:
        return
    if os.path.abspath(spec.origin) == os.path.abspath(__file__):
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def _folder():
    return os.environ.get("DISTILL_HOOK_DIR", "/tmp/graphs")


def _tag():
    return os.environ.get("DISTILL_TAG") or str(os.getpid())


def _log(msg):
    line = f"[graphs-hook pid {os.getpid()} tag {_tag()}] {msg}"
    print(line, file=sys.stderr, flush=True)
    try:
        os.makedirs(_folder(), exist_ok=True)
        with open(os.path.join(_folder(), "hook.log"), "a") as fh:
            fh.write(line + "\n")
    except OSError:
        pass


def _argv_value(flag):
    for i, a in enumerate(sys.argv):
        if a == flag and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _count_graphs():
    import torch

    graph = torch.cuda.CUDAGraph
    capture_begin, replay = graph.capture_begin, graph.replay

    def counted_capture_begin(self, *args, **kwargs):
        _COUNTS["captures"] += 1
        return capture_begin(self, *args, **kwargs)

    def counted_replay(self, *args, **kwargs):
        _COUNTS["replays"] += 1
        return replay(self, *args, **kwargs)

    graph.capture_begin, graph.replay = counted_capture_begin, counted_replay


def _at_exit():
    import json
    import shutil

    stats = {
        "tag": _tag(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("DISTILL_", "UNSLOTH_BLOCK", "TORCH_LOGS"))},
    }
    stats["graphs"] = dict(_COUNTS)
    try:
        from torch._dynamo.utils import counters

        stats["inductor"] = {k: v for k, v in counters["inductor"].items() if "cudagraph" in k}
        stats["dynamo_stats"] = dict(counters["stats"])
        stats["recompiles"] = sum(counters["recompiles"].values()) if "recompiles" in counters else None
    except Exception as exc:
        stats["counters_error"] = repr(exc)
    fixed = sys.modules.get("fixed_shapes")
    if fixed is not None:
        s = dict(fixed.STATS)
        s["shapes"] = dict(s["shapes"])
        s["padded_over_real"] = round(s["part_tokens"] / s["real_tokens"], 4) if s["real_tokens"] else None
        stats["fixed_shapes"] = s
    try:
        import torch

        if torch.cuda.is_available():
            stats["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            stats["max_memory_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    except Exception:
        pass
    os.makedirs(_folder(), exist_ok=True)
    with open(os.path.join(_folder(), f"stats-{_tag()}.json"), "w") as fh:
        json.dump(stats, fh, indent=1, default=str)
    _log(f"stats {json.dumps(stats, default=str)}")
    out = _argv_value("--out")
    src = os.path.join(out, "metrics.jsonl") if out else None
    if src and os.path.isfile(src):
        shutil.copyfile(src, os.path.join(_folder(), f"metrics-{_tag()}.jsonl"))


def _patch_sft(module):
    mode = os.environ.get("DISTILL_HF_COMPILE")
    if not mode:
        return
    original = module.sft_args

    def sft_args(cfg, plan):
        args = original(cfg, plan)
        args.torch_compile, args.torch_compile_backend, args.torch_compile_mode = True, "inductor", mode
        _log(f"Trainer torch_compile on: backend inductor, mode {mode}")
        return args

    module.sft_args = sft_args  # run() looks sft_args up in the module at call time


def _patch(module):
    import atexit

    if module.__name__ == "train.sft":
        return _patch_sft(module)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    value = os.environ.get("DISTILL_FIXED_SHAPES")
    if value:
        import fixed_shapes

        budget = None if value == "1" else int(value)
        buckets = [int(x) for x in os.environ.get("DISTILL_SHAPE_BUCKETS", fixed_shapes.DEFAULT_BUCKETS).split(",")]
        fixed_shapes.PER_PART[0] = os.environ.get("DISTILL_SHAPE_PER_PART") == "1"
        fixed_shapes.install(module, budget, buckets)
        _log(f"fixed shapes: budget {budget or 'max_batch_tokens'}, buckets {buckets}")
    limit = os.environ.get("DISTILL_RERECORD_LIMIT")
    if limit:
        import torch._inductor.config as inductor_config

        inductor_config.triton.cudagraph_unexpected_rerecord_limit = int(limit)
        _log(f"cudagraph_unexpected_rerecord_limit = {limit}")
    if os.environ.get("DISTILL_GRAPH_STATS"):
        _count_graphs()
    atexit.register(_at_exit)


def _install():
    import importlib.abc
    import importlib.util

    class Finder(importlib.abc.MetaPathFinder):
        busy = False

        def find_spec(self, name, path, target=None):
            if name not in _TARGETS or Finder.busy:
                return None
            Finder.busy = True
            try:
                spec = importlib.util.find_spec(name)
            finally:
                Finder.busy = False
            if spec is None or spec.loader is None:
                return spec
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder())


try:
    _chain_other_sitecustomize()
except Exception as exc:  # never break the interpreter's start
    print(f"[graphs-hook] other sitecustomize failed: {exc!r}", file=sys.stderr)

if _ON:
    _install()
