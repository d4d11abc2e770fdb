"""The typed configuration of `distill gen` (YAML, flags and key=value all land here)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.models import EMBEDDED
from common.teacher.config import TeacherConfig


class GenConfig(BaseModel):
    """Everything `distill gen` needs; see `distill gen --help` for the common flags."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(default_factory=list, description="Files, directories (recursive) or globs of .txt .md .html .htm .pdf .docx documents.")
    out: str = Field("data", description="Output directory for train.jsonl, test.jsonl, rejects.jsonl, manifest.json and the request cache.")
    task: str = Field("qa", description="Built-in task (qa, reasoning) or a name for a custom task given by prompt_file + schema_file.")
    prompt_file: str | None = Field(None, description="Custom prompt template (Python format fields: {chunk}, {n}, {schema}).")
    schema_file: str | None = Field(None, description="Custom JSON Schema of the teacher output (an object with a list 'items' of question/answer objects).")
    pairs_per_chunk: int = Field(2, ge=1, le=20, description="QA items asked of the teacher for every chunk.")
    tokenizer: str = Field(EMBEDDED, description="Tokenizer that measures chunk sizes: the student's ('embedded', path or hub id).")
    chunk_tokens: int = Field(384, ge=32, description="Target chunk size in tokens of the student tokenizer.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by consecutive chunks of one document.")
    max_chunks: int | None = Field(None, ge=1, description="Use at most this many chunks (a quick try).")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of items (split_by=item) or documents (split_by=document) held out in test.jsonl.")
    split_by: Literal["item", "document"] = Field("item", description="item: closed-book knowledge, held-out items of training docs; document: open-book skill, unseen docs.")
    near_dup_threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity (MinHash of character 5-grams) at or above which two questions are near-duplicates: the later one is dropped, and so is a test item this close to a train item.")
    min_score: int | None = Field(None, ge=1, le=5, description="Teacher as judge: score every accepted item 1-5 for faithfulness to its chunk and usefulness; keep items scoring at least this on both (None: no judging).")
    seed: int = Field(0, description="Seed of the split and of chunk sampling.")
    export: list[Literal["alpaca", "sharegpt", "openai"]] = Field(default_factory=list, description="Extra formats written beside train/test.jsonl.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="The teacher LLM.")

    @model_validator(mode="after")
    def _overlap_fits(self) -> "GenConfig":
        if self.chunk_overlap * 2 > self.chunk_tokens:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be at most half of chunk_tokens ({self.chunk_tokens}); lower chunk_overlap or raise chunk_tokens")
        return self
