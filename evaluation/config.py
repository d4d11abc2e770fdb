"""The typed configuration of `distill eval` (YAML section `eval:` of a pipeline, flags, key=value)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.teacher.config import TeacherConfig


class EvalConfig(BaseModel):
    """Which models answer test.jsonl, how they are graded, and where the report goes."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(
        "data",
        description="Data directory written by `distill gen` (test.jsonl, manifest.json), or your own data: a "
                    "directory of test.jsonl, one JSONL/JSON file (every row is asked) or a `datasets` save_to_disk "
                    "folder, in distill, chat (messages), Alpaca or ShareGPT format (docs/train.md).",
    )
    split: str = Field(
        "test",
        description="Which split to evaluate where DATA has several: DATA/{split}.jsonl, or a split of a `datasets` "
                    "DatasetDict (e.g. test_sft).",
    )
    out: str = Field(
        "eval",
        description="Output directory: report.md, report.html, metrics.json, predictions.jsonl, lm_eval/, "
                    "cache.sqlite.",
    )
    students: list[str] = Field(
        default_factory=list,
        description="Trained students: model directories (LoRA adapter or merged), hub ids or 'embedded'.",
    )
    base: str | None = Field(
        None,
        description="The untrained base student; default: the base named by the first student (adapter_config.json / "
                    "run.json), else 'embedded'.",
    )
    include_base: bool = Field(True, description="Evaluate the base student too (needed for 'gap closed').")
    teacher: TeacherConfig | None = Field(
        None,
        description="The teacher as reference point (local: answered with transformers; openai/vllm: through its "
                    "backend); null: no teacher.",
    )
    mode: Literal["auto", "closed-book", "open-book"] = Field(
        "auto",
        description="auto: follow the data's split (item -> closed-book, document -> open-book; closed-book without a "
                    "manifest); or force one. Chat, Alpaca and ShareGPT rows are asked as their own conversations.",
    )
    max_questions: int | None = Field(
        None, ge=1, description="Evaluate only the first N questions of test.jsonl (a quick try)."
    )
    train_questions: int = Field(
        100,
        ge=0,
        description="Closed-book data: also ask the base and the students up to this many training questions (first "
                    "the taught phrasings of the test's facts) and report their recall; 0: off.",
    )
    max_new_tokens: int = Field(256, ge=1, description="Most tokens a model may write for one answer (trace + answer).")
    batch_size: int = Field(8, ge=1, description="Questions generated together in one batch (transformers batching).")
    engine: Literal["auto", "vllm", "transformers"] = Field(
        "auto",
        description="What generates the base's and the students' answers: vllm (in process; LoRA students through "
                    "LoRARequest on their base, one engine per base), transformers (batch_size at a time); auto: vllm "
                    "where vLLM is installed and a CUDA GPU is visible, else transformers. The teacher answers "
                    "through its own backend.",
    )
    vllm_args: dict = Field(
        default_factory=dict,
        description="Extra keyword arguments of vllm.LLM for engine=vllm (gpu_memory_utilization, max_model_len, "
                    "tensor_parallel_size, ...).",
    )
    judge: bool = Field(
        False, description="LLM-as-judge: the judge model grades every answer 1-5 against the reference."
    )
    pairwise: bool = Field(
        False,
        description="Pairwise preference of every student (and the base) against the teacher, judged in both orders.",
    )
    judge_model: TeacherConfig | None = Field(
        None, description="The judge; default: the teacher's config (always greedy, structured JSON)."
    )
    numeric_tolerance: float = Field(1e-6, ge=0, description="Relative tolerance of the numeric-match grader.")
    bootstrap_samples: int = Field(
        1000, ge=100, description="Resamples of the questions for the 95% bootstrap confidence intervals."
    )
    examples: int = Field(3, ge=0, description="Best and worst examples shown side by side in the report (each).")
    seed: int = Field(0, description="Seed of the bootstrap resampling.")

    @model_validator(mode="after")
    def _judge_has_a_model(self) -> "EvalConfig":
        if (self.judge or self.pairwise) and not (self.judge_model or self.teacher):
            raise ValueError(
                "judge and pairwise need a judge model: set teacher or judge_model, or turn judge/pairwise off"
            )
        return self
