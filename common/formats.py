"""The data `distill train` and `distill eval` read: a `distill gen` directory, or data brought
from elsewhere, detected by the fields of its first rows and converted to records.

Where the data can be: a `distill gen` directory (manifest.json: every line is checked against
schemas/record.schema.json, as gen wrote it); a directory of `{split}.jsonl` (or `.json`) files
without a manifest; one JSONL or JSON-array file (all its rows; a file has no splits); a folder
written by `datasets`' `save_to_disk` (a DatasetDict: the named split; a Dataset: all rows).

The shapes a row can have (docs/train.md, "Bring your own data"):

    distill   {"question", "answer", "reasoning"?, "context"?, "messages"?, ...}  (records without a manifest)
    chat      {"messages": [{"role": "system"|"user"|"assistant", "content"}...]}  (OpenAI format)
    alpaca    {"instruction", "input"?, "output"}
    sharegpt  {"conversations": [{"from": "system"|"human"|"gpt", "value"}...]}

Every row becomes a record with `id`, `question` (the last user turn), `answer` (what follows
`</think>` in the last assistant turn: the reference eval grades against), `reasoning` (the
trace before it, or empty) and `messages`, cut after the last assistant turn. A record without
`context` is asked as its own conversation (common.contract.prompt_messages), and training
learns every assistant turn of it, as TRL's `assistant_only_loss` does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from common.contract import Mode, assistant_text, own_conversation, split_trace
from common.errors import UserError
from common.io import read_jsonl

SHAPES = {
    "distill": "distill records (question, answer)",
    "chat": "chat (messages)",
    "alpaca": "Alpaca (instruction, output)",
    "sharegpt": "ShareGPT (conversations)",
}
EXPECTED = "expected one of: " + ", ".join(SHAPES.values())
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
CHAT_ROLES = ("system", "user", "assistant")
DETECT_ROWS = 5  # the shape is read off this many first rows; they must agree


@dataclass
class Data:
    records: list[dict]
    format: str  # a key of SHAPES
    source: str  # what was read: a file, or a `datasets` folder and split
    manifest: dict | None  # the `distill gen` manifest, where there is one
    sha256: str  # of manifest.json where there is one, else of the bytes read

    def describe(self) -> dict:
        """What run.json says about the data read (beside its `data_format`)."""
        gen = self.manifest is not None
        return {"source": self.source, "manifest_sha256": self.sha256 if gen else None, "data_sha256": None if gen else self.sha256}


def load(path: str | Path, split: str, hint: str = "") -> Data:
    """The `split` records of the data at `path` (a file, or a single Dataset, is all one split);
    `hint` ends the error where the data has no such split (what the user can do about it)."""
    path = Path(path)
    if path.is_file():
        return from_rows(*read_file(path), str(path))
    if not path.is_dir():
        raise UserError(f"data directory {path} does not exist; run `distill gen DOCS --out {path}` first, or point at your own data (docs/train.md)")
    if is_datasets_folder(path):
        return from_datasets(path, split)
    if (path / "manifest.json").is_file():
        return from_gen(path, split, hint)
    for name in (f"{split}.jsonl", f"{split}.json"):
        if (path / name).is_file():
            return from_rows(*read_file(path / name), str(path / name))
    raise UserError(f"data directory {path} has no {split}.jsonl{hint}")


def has_split(path: str | Path, split: str) -> bool:
    """Whether the data at `path` has a split of that name besides the one read (a file and a single Dataset have none)."""
    path = Path(path)
    if (path / "dataset_dict.json").is_file():
        return split in json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
    return path.is_dir() and not is_datasets_folder(path) and any((path / f"{split}{ext}").is_file() for ext in (".jsonl", ".json"))


def is_datasets_folder(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def check_mode(data: Data, mode: Mode, flag: str) -> None:
    """Open-book prompts need the passage (`context`) of every distill record; chat, Alpaca and
    ShareGPT rows are asked as their own conversations in either mode."""
    lacking = sum(own_conversation(r) for r in data.records) if data.format == "distill" else 0
    if mode == "open-book" and lacking:
        raise UserError(f"open-book prompts need each record's context (the passage), and {lacking} records of {data.source} have none; add it or pass {flag} closed-book")


def from_gen(path: Path, split: str, hint: str) -> Data:
    """A `distill gen` directory: records checked against the schema, the manifest's hash."""
    raw = (path / "manifest.json").read_bytes()
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path / 'manifest.json'} is not valid JSON ({exc.msg}); regenerate the data with `distill gen`") from exc
    if not (path / f"{split}.jsonl").is_file():
        raise UserError(f"data directory {path} has no {split}.jsonl{hint}")
    records = read_jsonl(path / f"{split}.jsonl")
    return Data(records, "distill", str(path / f"{split}.jsonl"), manifest, hashlib.sha256(raw).hexdigest())


def read_file(path: Path) -> tuple[list[dict], list[int], bytes]:
    """(rows, where each row is: its line, or its index in a JSON array, the bytes read)."""
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); fix the file") from exc
        return rows, list(range(1, len(rows) + 1)), raw
    rows, lines = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number} is not valid JSON ({exc.msg}); fix the file (one JSON object per line)") from exc
        lines.append(number)
    return rows, lines, raw


def from_datasets(path: Path, split: str) -> Data:
    """A folder written by `Dataset.save_to_disk` (all rows) or `DatasetDict.save_to_disk` (`split`)."""
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"{path} looks like a `datasets` folder but cannot be loaded ({exc}); save it again with save_to_disk") from exc
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise UserError(f"{path} has no split {split!r} (it has {', '.join(loaded)}); name one with split=NAME")
        table, folder, source = loaded[split], path / split, f"{path} (datasets, split {split})"
    else:
        table, folder, source = loaded, path, f"{path} (datasets)"
    rows = table.to_list()
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(file.read_bytes())
    return from_rows(rows, list(range(1, len(rows) + 1)), digest.digest(), source)


def from_rows(rows: list, where: list[int], raw: bytes, source: str) -> Data:
    """Detect the shape of `rows` and convert every one (a row that does not convert names its place)."""
    shape = detect(rows, source)
    convert = CONVERTERS[shape]
    records = []
    for row, place in zip(rows, where):
        try:
            records.append(convert(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{source}:{place} is not a valid {SHAPES[shape]} row: {exc}") from exc
    return Data(records, shape, source, None, hashlib.sha256(raw).hexdigest())


def shape_of(row) -> str | None:
    if not isinstance(row, dict):
        return None
    if "question" in row and "answer" in row:
        return "distill"
    if "messages" in row:
        return "chat"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "conversations" in row:
        return "sharegpt"
    return None


def detect(rows: list, source: str) -> str:
    """The one shape of the first rows; an unknown or mixed shape is a one-line error."""
    if not rows:
        return "distill"  # nothing to convert; callers say the data is empty
    shapes = [shape_of(row) for row in rows[:DETECT_ROWS]]
    if shapes[0] is None:
        fields = ", ".join(sorted(rows[0])) if isinstance(rows[0], dict) else type(rows[0]).__name__
        raise UserError(f"{source}: unknown data format (first row has {fields or 'no fields'}); {EXPECTED}")
    other = next((n for n, s in enumerate(shapes, 1) if s != shapes[0]), None)
    if other is not None:
        raise UserError(f"{source}: mixed data formats (row 1 is {SHAPES[shapes[0]]}, row {other} is {SHAPES.get(shapes[other - 1], 'unknown')}); {EXPECTED}")
    return shapes[0]


# ---------------------------------------------------------------- shapes -> records


def text_of(value, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    return value


def conversation_record(messages: list[dict], extra: dict | None = None) -> dict:
    """A record from a chat: cut after its last assistant turn, which gives the reference answer."""
    if not messages:
        raise ValueError("the conversation is empty")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise ValueError("the conversation has no assistant turn")
    first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    if not any(m["role"] == "user" for m in messages[:first]):
        raise ValueError("the first assistant turn has no user turn before it")
    messages = messages[: last + 1]
    question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    reasoning, answer = split_trace(messages[-1]["content"])
    if not answer.strip():
        raise ValueError("the last assistant turn has no answer after its reasoning")
    digest = hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()[:16]
    return {"id": digest, "question": question, "answer": answer, "reasoning": reasoning or "", "messages": messages, **(extra or {})}


def from_chat(row: dict) -> dict:
    turns = row["messages"]
    if not isinstance(turns, list):
        raise ValueError("messages must be a list of {role, content} turns")
    messages = []
    for turn in turns:
        role = turn["role"]
        if role not in CHAT_ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(CHAT_ROLES)}")
        messages.append({"role": role, "content": text_of(turn["content"], f"the content of a {role} turn")})
    return conversation_record(messages)


def from_sharegpt(row: dict) -> dict:
    turns = row["conversations"]
    if not isinstance(turns, list):
        raise ValueError("conversations must be a list of {from, value} turns")
    messages = []
    for turn in turns:
        role = SHAREGPT_ROLES.get(turn["from"])
        if role is None:
            raise ValueError(f"from {turn['from']!r} is not one of system, human, gpt")
        messages.append({"role": role, "content": text_of(turn["value"], f"the value of a {turn['from']} turn")})
    return conversation_record(messages)


def from_alpaca(row: dict) -> dict:
    instruction = text_of(row["instruction"], "instruction").strip()
    given = text_of(row.get("input") or "", "input").strip()
    output = text_of(row["output"], "output")
    if not instruction or not output.strip():
        raise ValueError("instruction and output must not be empty")
    question = f"{instruction}\n\n{given}" if given else instruction
    return conversation_record([{"role": "user", "content": question}, {"role": "assistant", "content": output}])


def from_records(row: dict) -> dict:
    """A record in distill's own shape without a manifest: question and answer are required, the
    rest is kept where present (reasoning, context for open-book, messages, fact, id)."""
    question, answer = text_of(row["question"], "question"), text_of(row["answer"], "answer")
    if not question.strip() or not answer.strip():
        raise ValueError("question and answer must not be empty")
    reasoning = text_of(row.get("reasoning") or "", "reasoning")
    given = row.get("messages")
    turn = given[-1] if isinstance(given, list) and given and isinstance(given[-1], dict) and given[-1].get("role") == "assistant" else None
    content = text_of(turn["content"], "the assistant turn") if turn else (assistant_text(reasoning, answer) if reasoning.strip() else answer)
    extra = {k: row[k] for k in ("context", "fact", "evidence") if isinstance(row.get(k), str) and row[k]}
    record = conversation_record([{"role": "user", "content": question}, {"role": "assistant", "content": content}], extra)
    record.update(question=question, answer=answer, reasoning=reasoning)
    if isinstance(row.get("id"), str) and row["id"]:
        record["id"] = row["id"]
    return record


CONVERTERS = {"distill": from_records, "chat": from_chat, "alpaca": from_alpaca, "sharegpt": from_sharegpt}
