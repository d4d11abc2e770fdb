"""The teacher LLM as every stage asks it: config, backends (local, openai, vllm), request cache, `ask`."""
