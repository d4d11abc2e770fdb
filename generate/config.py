"""The typed configuration of `distill gen` (YAML, flags and key=value all land here)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.models import EMBEDDED
from common.teacher.config import TeacherConfig
from generate.facts import FACTS_PER_REQUEST


class RayConfig(BaseModel):
    """How `distill gen --ray` runs the stage on Ray Data (generate/ray_stage.py)."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        None, description="Ray cluster to join (auto, host:6379, ray://host:10001); None: $RAY_ADDRESS or a local Ray."
    )
    teacher_workers: int = Field(
        2, ge=1, description="Teacher actors, each with its own backend and cache shard; teacher.concurrency is shared."
    )
    files_per_read: int = Field(
        128, ge=1, description="Files read and chunked in one Ray task, at most: each task costs Ray's worker tens of ms of CPU of its own, so tasks of a few files spend the CPUs on Ray (128 against 64 on 2 CPUs: +9% in alternating runs, within 2% in another; docs/benchmarks.md). A corpus that would give the cluster fewer tasks than CPUs is read in smaller tasks (of 8 files at least), one a CPU."
    )
    files_per_batch: int = Field(8, ge=1, description="Files a teacher actor asks at a time (its requests in flight drain at the end of each batch).")


class GenConfig(BaseModel):
    """Everything `distill gen` needs; see `distill gen --help` for the common flags."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(default_factory=list, description="Files, directories (recursive) or globs of .txt .md .html .htm .pdf .docx documents.")
    max_file_mb: float = Field(100, gt=0, description="Skip a file over this size (of the file, or of its text) with a line saying so: a file's text is held whole, with its chunks and prompts (~5x its size in memory).")
    out: str = Field("data", description="Output directory for train.jsonl, test.jsonl, rejects.jsonl, manifest.json and the request cache.")
    task: str = Field("qa", description="Built-in task (qa, reasoning) or a name for a custom task given by prompt_file + schema_file.")
    prompt_file: str | None = Field(None, description="Custom prompt template (fields: {chunk}, {fence} (quotes around the chunk that it cannot close), {n}, {k}, {schema}, {shape}).")
    schema_file: str | None = Field(None, description="Custom JSON Schema of the teacher output (an object with a list 'items' of question/answer objects).")
    pairs_per_chunk: Annotated[int, Field(ge=1, le=20)] | Literal["auto"] = Field(
        "auto",
        description="Facts (QA items) asked for every chunk, each in `phrasings` questions; auto: facts first with split_by=item "
        "(the teacher lists every fact of the chunk, then writes the questions for each: generate/facts.py), 2 with split_by=document.",
    )
    phrasings: int | Literal["auto"] = Field(
        "auto", description="Distinct questions asked for every fact, held out by phrasing in the item split (every fact taught, test asks other wordings); auto: 3 with split_by=item, 1 with split_by=document."
    )
    answers: Literal["auto", "free", "span"] = Field(
        "auto",
        description="free: the teacher words each answer; span: each answer is a few words copied from its evidence (a name, a number, a date), "
        "its questions made of the evidence's words, with qa its reasoning the evidence (generate/spans.py), constrained where the teacher takes a schema "
        "and checked on every reply: what a small teacher writes correctly; auto: span for the qa task with the embedded teacher, free otherwise.",
    )
    rewrites: int = Field(0, ge=0, le=6, description="Teacher rewrites of every chunk (a paraphrase, Q&A-style notes, a summary naming every entity, in turn), written with the chunks to text.jsonl as continued-pretraining text; 0: none.")
    tokenizer: str = Field(EMBEDDED, description="Tokenizer that measures chunk sizes: the student's ('embedded', path or hub id).")
    chunk_tokens: int = Field(384, ge=32, description="Target chunk size in tokens of the student tokenizer.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by consecutive chunks of one document.")
    max_chunks: int | None = Field(None, ge=1, description="Use at most this many chunks (a quick try).")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of items held out in test.jsonl: phrasings of taught facts (split_by=item) or whole documents (split_by=document).")
    split_by: Literal["item", "document"] = Field("item", description="item: closed-book knowledge, every fact taught and other phrasings of it held out; document: open-book skill, unseen docs.")
    near_twin_threshold: float = Field(
        0.7, gt=0, le=1, description="Jaccard similarity of the word sets (lowercased, lightly stemmed: generate/split.py) at or above which two phrasings of one fact are near-twins: the later one is dropped before the split."
    )
    near_dup_threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity (MinHash of character 5-grams) at or above which two questions of different facts are near-duplicates: the later one is dropped (a fact's own phrasings may be alike).")
    min_score: int | None = Field(None, ge=1, le=5, description="Teacher as judge: score every accepted item 1-5 for faithfulness to its chunk and usefulness; keep items scoring at least this on both (None: no judging).")
    seed: int = Field(0, description="Seed of the split and of chunk sampling.")
    export: list[Literal["alpaca", "sharegpt", "openai"]] = Field(default_factory=list, description="Extra formats written beside train/test.jsonl.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="The teacher LLM.")
    ray: RayConfig | None = Field(
        None, description="Run the stage as a Ray Data pipeline (gen --ray [ADDRESS], distill[ray]); None: one process."
    )

    @property
    def questions_per_fact(self) -> int:
        """`phrasings`, with auto resolved by the split: several for knowledge, one for skill."""
        if self.phrasings == "auto":
            return 3 if self.split_by == "item" else 1
        return self.phrasings

    @property
    def extractive(self) -> bool:
        """`answers` resolved: span answers (auto: for the qa task with the embedded 135M teacher, which cannot word its own)."""
        if self.answers == "auto":
            return self.teacher.model == EMBEDDED and self.task == "qa"
        return self.answers == "span"

    @property
    def facts_first(self) -> bool:
        """pairs_per_chunk auto on knowledge data: list the facts of each chunk, then ask every one."""
        return self.pairs_per_chunk == "auto" and self.split_by == "item"

    @property
    def facts_per_request(self) -> int:
        """Facts asked in one item request: pairs_per_chunk, or with auto 2 (document split) or a batch of listed facts."""
        if self.pairs_per_chunk != "auto":
            return self.pairs_per_chunk
        return FACTS_PER_REQUEST if self.split_by == "item" else 2

    @model_validator(mode="after")
    def _rules_across_fields(self) -> "GenConfig":
        if self.chunk_overlap * 2 > self.chunk_tokens:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be at most half of chunk_tokens ({self.chunk_tokens}); lower chunk_overlap or raise chunk_tokens")
        if self.phrasings != "auto" and not 1 <= self.phrasings <= 8:
            raise ValueError(f"phrasings must be auto or 1 to 8, not {self.phrasings}")
        return self
