"""Write an lm-evaluation-harness task for test.jsonl, scored by the same graders as `distill eval`.

    lm_eval --model hf --model_args pretrained=STUDENT --apply_chat_template \\
        --include_path EVAL_OUT/lm_eval --tasks distill_test

The task's `process_results` calls `common.graders.string_scores` on each generation, the
function `distill eval` uses, so the same predictions get the same scores in both tools.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from common.contract import STRING_METRICS, Mode, user_turn
from common.io import write_atomic, write_jsonl

TASK = "distill_test"
UTILS = '''"""Scoring of the distill_test task: the graders of `distill eval` (common.graders)."""

from common import graders


def process_results(doc, results):
    return graders.string_scores(results[0], doc["answer"])


def mean_defined(items):
    """Mean over the questions a grader applies to (numeric: references holding a number)."""
    values = [x for x in items if x is not None]
    return sum(values) / len(values) if values else float("nan")
'''


def task_rows(records: list[dict], mode: Mode) -> list[dict]:
    """What the task reads: the prompt of the chosen mode (user turn) and the reference answer; a
    brought conversation gives its last user turn (lm-eval asks one turn: system and earlier turns are left out)."""
    return [{"id": r["id"], "prompt": user_turn(r, mode), "answer": r["answer"]} for r in records]


def task_config(data_file: Path, max_gen_toks: int = 256) -> dict:
    metric = lambda name: {"metric": name, "aggregation": "mean", "higher_is_better": True}  # noqa: E731
    return {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["<|im_end|>"], "max_gen_toks": max_gen_toks, "do_sample": False},
        "process_results": "!function utils.process_results",
        "metric_list": [metric(m) for m in STRING_METRICS],
        "metadata": {"version": 1.0},
    }


def write_task(folder: Path, records: list[dict], mode: Mode, max_gen_toks: int = 256) -> Path:
    """Write distill_test.yaml, distill_test.jsonl and utils.py into `folder`; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    data_file = folder / f"{TASK}.jsonl"
    write_jsonl(data_file, task_rows(records, mode))
    config = task_config(data_file, max_gen_toks)
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    # lm-eval resolves `!function` tags itself; numeric applies only where the reference holds a number
    text = text.replace("'!function utils.process_results'", "!function utils.process_results")
    text = text.replace(
        "- metric: numeric\n  aggregation: mean", "- metric: numeric\n  aggregation: !function utils.mean_defined"
    )
    yaml_path = folder / f"{TASK}.yaml"
    write_atomic(yaml_path, text)
    write_atomic(folder / "utils.py", UTILS)
    return yaml_path
