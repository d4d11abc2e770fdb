"""How a teacher LLM is reached and asked: the one config every stage that asks a teacher uses
(gen's writer and judge, eval's reference answers and judge, GRPO's judge reward)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.models import EMBEDDED


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
    retry_down_s: float = Field(
        30, gt=0, description="openai backend, several base URLs: seconds before a server taken out is tried again."
    )
    backoff_max_s: float = Field(30, gt=0, description="openai backend: longest wait between two retries (a server's Retry-After is honoured up to 120 s).")
    repair_attempts: int = Field(1, ge=0, description="Times an output failing the schema is re-asked with the error shown.")
    structured: bool = Field(
        True, description="Ask the backend for schema-constrained output where it can (off: the prompt alone asks)."
    )
    schema_rendering: Literal["auto", "full", "gbnf"] = Field(
        "auto",
        description="openai backend: the schema as sent: full; gbnf (no regex patterns, no long maxLength: for servers "
        "that compile schemas into GBNF grammars, e.g. llama.cpp); auto: gbnf for llama.cpp's servers, else full. "
        "Replies are always checked against the full schema.",
    )
    seed: int | None = Field(0, description="Sampling seed (None: nondeterministic).")
    extra_body: dict = Field(default_factory=dict, description="openai backend: extra request fields for the server, e.g. {chat_template_kwargs: {enable_thinking: true}} or {top_k: 20}.")
    engine_args: dict = Field(default_factory=dict, description="vllm backend: keyword arguments of vllm.LLM, e.g. {tensor_parallel_size: 2, max_model_len: 8192, gpu_memory_utilization: 0.9}.")
