"""Convert JSON Schemas with a schema-to-grammar converter that lives in another Python (its own venv).

    echo '{"name": schema, ...}' | PYTHON tests/grammar_probe.py llama.cpp MODEL.gguf
    echo '{"name": schema, ...}' | PYTHON tests/grammar_probe.py outlines-core

prints {"name": {"size": ..., "error": null or why}, ...}. Standard library + the converter only:
- llama.cpp: llama-cpp-python's converter (llama_cpp.llama_grammar.json_schema_to_gbnf, the one its
  server uses for `response_format`), then llama.cpp's own grammar parser, as the server calls it
  (llama_sampler_init_grammar on the model's vocabulary: NULL is "failed to parse grammar", which
  the server does not survive); size: characters of the GBNF grammar.
- outlines-core: build_regex_from_schema, then the index (a DFA over a vocabulary of the
  printable ASCII characters and those of the schemas); size: states of the index.
"""

from __future__ import annotations

import json
import sys


def llama_cpp(schemas: dict, model: str) -> dict:
    import llama_cpp
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    vocab = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)._model.vocab
    found = {}
    for name, schema in schemas.items():
        try:
            grammar = json_schema_to_gbnf(json.dumps(schema))
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            found[name] = {"size": 0, "error": f"converter: {type(exc).__name__}: {exc}"[:300]}
            continue
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if sampler:
            llama_cpp.llama_sampler_free(sampler)
        found[name] = {"size": len(grammar), "error": None if sampler else "failed to parse grammar"}
    return found


def outlines_core(schemas: dict) -> dict:
    from outlines_core import Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    chars = {chr(c) for c in range(32, 127)} | set(json.dumps(schemas, ensure_ascii=False))  # the quotes' own letters
    vocabulary = Vocabulary(0, {char: [i + 1] for i, char in enumerate(sorted(chars - {"\n"}))})
    found = {}
    for name, schema in schemas.items():
        try:
            index = Index(build_regex_from_schema(json.dumps(schema)), vocabulary)
            found[name] = {"size": len(index.get_transitions()), "error": None}
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            found[name] = {"size": 0, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return found


if __name__ == "__main__":
    given = json.load(sys.stdin)
    result = llama_cpp(given, sys.argv[2]) if sys.argv[1] == "llama.cpp" else outlines_core(given)
    json.dump(result, sys.stdout)
