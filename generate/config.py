"""The typed configuration of `distill gen` (YAML, flags and key=value all land here)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from distill.models import EMBEDDED


class TeacherConfig(BaseModel):
    """Which LLM writes the data, and how it is asked."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "openai", "vllm"] = Field(
        "local", description="local: in-process transformers + xgrammar (CPU or GPU); openai: any OpenAI-compatible server; vllm: in-process vLLM engine."
    )
    model: str = Field(EMBEDDED, description="Teacher model: 'embedded' (SmolLM2-135M-Instruct), a local path or a hub id; for openai, the served model name.")
    base_url: list[str] = Field(default_factory=list, description="openai backend: one or several base URLs (requests are spread over them).")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai backend: name of the environment variable holding the API key (the key itself is never stored).")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling threshold.")
    repetition_penalty: float = Field(1.1, ge=1, le=2, description="local backend: penalty on tokens a row already generated (1 = off); curbs the loops of small teachers.")
    max_new_tokens: int = Field(768, ge=16, description="Most tokens the teacher may write for one request.")
    batch_size: int = Field(32, ge=1, description="local/vllm backends: rows decoded together (continuous batching keeps them full).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="local backend: weights dtype; auto = bfloat16 on GPUs and bf16-capable CPUs, else float32.")
    concurrency: int = Field(32, ge=1, description="openai backend: requests in flight at once.")
    timeout_s: float = Field(300, gt=0, description="openai backend: seconds before a request is abandoned and retried.")
    max_retries: int = Field(6, ge=0, description="openai backend: retries on 429, 5xx, timeouts and connection errors.")
    backoff_s: float = Field(0.5, gt=0, description="openai backend: wait before the first retry, in seconds; doubled at each retry, with jitter.")
    backoff_max_s: float = Field(30, gt=0, description="openai backend: longest wait between two retries (a server's Retry-After is honoured up to 120 s).")
    repair_attempts: int = Field(1, ge=0, description="Times an output failing the schema is re-asked with the error shown.")
    structured: bool = Field(True, description="Ask the backend for schema-constrained output where it supports it.")
    seed: int | None = Field(0, description="Sampling seed (None: nondeterministic).")
    extra_body: dict = Field(default_factory=dict, description="openai backend: extra request fields for the server, e.g. {chat_template_kwargs: {enable_thinking: true}} or {top_k: 20}.")
    engine_args: dict = Field(default_factory=dict, description="vllm backend: keyword arguments of vllm.LLM, e.g. {tensor_parallel_size: 2, max_model_len: 8192, gpu_memory_utilization: 0.9}.")


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
