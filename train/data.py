"""Training data: read a `distill gen` directory (or data brought from elsewhere: chat, Alpaca,
ShareGPT, `datasets` folders, see common/formats.py), render each record with the chat
template, tokenize it, and mark the assistant tokens (the only ones the loss sees).

The assistant turn is the record's own `<think>…</think>\n\nanswer`; the user turn follows
the prompt mode (closed-book: the question; open-book: context + question, see
common/contract.py); a record without a passage is its own conversation, and every assistant
turn of it is learned. Which tokens belong to the assistant is decided by character offsets:
what the template renders from an assistant turn's generation prompt to the end of that turn
is trained on, so any template whose prompts are prefixes of the full conversation works
(ChatML, Llama 3, Qwen, Gemma...).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

from common import formats
from common.contract import Mode, mode_for_split, training_messages
from common.errors import UserError
from common.io import read_jsonl
from train.config import TrainConfig

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
TEMPLATES = {"chatml": CHATML, "llama3": LLAMA3}
MIN_TRAINED_SHARE = 0.02  # below this share of tokens carrying a label, the run is almost surely mis-masked


@dataclass
class TrainData:
    train: list[dict]  # {"input_ids": [...], "completion_mask": [...]}: chat records and plain text
    val: list[dict]
    mode: Mode
    format: str  # the data's format (common.formats.SHAPES)
    source: dict  # formats.Data.describe(): what was read, its hashes
    split_by: str
    dropped_too_long: int = 0
    stats: dict = field(default_factory=dict)
    probe: dict = field(default_factory=dict)  # {"held_out": [records], "taught": [records]}: recall asked at the end of epochs (train/callbacks.py RecallProbe)


def kind_of(split_by: str) -> str:
    """The kind of domain model a `distill gen` split is for: item split = knowledge, document split = skill."""
    return "skill" if split_by == "document" else "knowledge"


def choose_recipe(source: formats.Data, asked: str = "auto") -> tuple[str, str]:
    """(knowledge | skill, why): the recipe (config key `recipe`) the `auto` hyperparameters follow. Knowledge
    is data with fact ids (what `distill gen` writes; its manifest's split_by says which); everything else,
    brought chat, Alpaca or ShareGPT data among it, gets the skill recipe unless the user asks."""
    if asked != "auto":
        return asked, f"recipe={asked} as set"
    if source.manifest is not None:
        split_by = source.manifest.get("split_by", "item")
        return kind_of(split_by), f"distill gen data split by {split_by}"
    facts = sum(1 for r in source.records if r.get("fact"))
    if facts:
        return "knowledge", f"{facts} of {len(source.records)} records carry fact ids; recipe=skill to change"
    return "skill", f"{source.format} data without fact ids; recipe=knowledge to teach facts"


def read_data_dir(data: str | Path, split: str = "train") -> formats.Data:
    """The training records (of any format common.formats reads); every problem is a one-line user error."""
    source = formats.load(data, split, hint="; name the file or split to train on with split=NAME, or pass the `distill gen` output directory")
    if not source.records:
        raise UserError(f"{source.source} holds no records; generate more data (more documents or --pairs-per-chunk) or point at a larger file")
    return source


def split_of(source: formats.Data, prompt_mode: str) -> str:
    """How the data was split: the manifest says; without one, the prompt mode stands for it
    (open-book: document split; otherwise item split). It picks the prompt mode, never the recipe."""
    if source.manifest is not None:
        return source.manifest.get("split_by", "item")
    return "document" if prompt_mode == "open-book" else "item"


def split_and_mode(source: formats.Data, prompt_mode: str) -> tuple[str, Mode]:
    """(how the data was split, the prompt mode to train in: the given one, or auto's by the split),
    the mode checked against what the records hold."""
    split_by = split_of(source, prompt_mode)
    mode: Mode = mode_for_split(split_by) if prompt_mode == "auto" else prompt_mode
    formats.check_mode(source, mode, "--prompt-mode")
    return split_by, mode


def apply_template(tokenizer, name: str | None) -> None:
    """Give the tokenizer a chat template: the named/given one, or ChatML when it has none."""
    if name:
        tokenizer.chat_template = TEMPLATES.get(name, name)
    elif not tokenizer.chat_template:
        tokenizer.chat_template = CHATML


def encode(tokenizer, record: dict, mode: Mode) -> dict:
    """Token ids of the whole conversation and a 0/1 mask of the assistant's tokens (every assistant turn)."""
    messages = training_messages(record, mode)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        end = full if i == len(messages) - 1 else tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (full.startswith(start) and full.startswith(end)):
            raise UserError(
                "the chat template renders a prompt differently inside the full conversation (some drop the traces of earlier assistant turns), "
                "so the assistant tokens cannot be found; pass --chat-template chatml (or a template whose generation prompt is a prefix)"
            )
        spans.append((len(start), len(end)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"]]
    return {"input_ids": enc["input_ids"], "completion_mask": mask}


def check_masks(rows: list[dict], where: str) -> dict:
    """Fail when (nearly) every label is masked — the run would learn nothing."""
    total = sum(len(r["input_ids"]) for r in rows)
    trained = sum(sum(r["completion_mask"]) for r in rows)
    share = trained / max(total, 1)
    if trained == 0 or share < MIN_TRAINED_SHARE:
        raise UserError(
            f"{where}: only {trained} of {total} tokens ({share:.1%}) carry a label, so the loss would ignore the answers; "
            "the chat template does not mark the assistant turn where expected: pass --chat-template chatml or fix the model's template"
        )
    return {"tokens": total, "trained_tokens": trained, "trained_share": round(share, 4)}


def prepare(
    cfg: TrainConfig, tokenizer, source: formats.Data, max_seq_length: int | None = None, kind: str | None = None
) -> TrainData:
    """Hold out the recall probe (knowledge data) and the validation slice, tokenize and check the training
    data (chat records, plus text.jsonl's plain text where there is one); source: read_data_dir's;
    max_seq_length: the model spec's (default: the config's); kind: the recipe (default: choose_recipe's)."""
    records = source.records
    max_seq_length = max_seq_length or cfg.max_seq_length
    kind = kind or choose_recipe(source, cfg.recipe)[0]
    split_by, mode = split_and_mode(source, cfg.prompt_mode)
    apply_template(tokenizer, cfg.chat_template)
    probe = recall_probe(records, cfg.recall_probe if kind == "knowledge" else 0, cfg.seed)
    held = {r["id"] for r in probe.get("held_out", [])}
    rows = [encode(tokenizer, r, mode) for r in records if r["id"] not in held]
    origin = {id(row): r["id"] for row, r in zip(rows, [r for r in records if r["id"] not in held])}  # row -> record
    text = read_text(Path(cfg.data)) if cfg.text is not False and Path(cfg.data).is_dir() else []
    if cfg.text is True and not text:
        raise UserError(f"text=true but {cfg.data}/text.jsonl is missing or empty; generate it with `distill gen --rewrites N` or set text=auto")
    rows += [piece for row in text for piece in encode_text(tokenizer, row["text"], max_seq_length)]
    kept = [r for r in rows if len(r["input_ids"]) <= max_seq_length]
    if not kept:
        longest = max(len(r["input_ids"]) for r in rows)
        raise UserError(
            f"every record is longer than max_seq_length={max_seq_length} tokens "
            f"(shortest needs more; longest {longest}); raise --max-seq-length"
        )
    random.Random(cfg.seed).shuffle(kept)
    n_val = round(len(kept) * cfg.val_fraction)
    if cfg.val_fraction > 0:
        n_val = min(max(n_val, 1), len(kept) - 1)
    probed = {r["id"] for r in probe.get("taught", [])}  # the probe's taught phrasings are trained on: never validation
    in_val = {id(row) for row in [row for row in kept if origin.get(id(row)) not in probed][:n_val]}
    val, train = [row for row in kept if id(row) in in_val], [row for row in kept if id(row) not in in_val]
    if not train:
        raise UserError(f"no training records left after holding out validation (val_fraction={cfg.val_fraction}); lower it")
    stats = check_masks(train, source.source)
    stats.update(records=len(train), val_records=len(val), text_rows=len(text), probe_held_out=len(held))
    trained = {origin[id(row)] for row in train if id(row) in origin}
    # held out of training (probe, validation, too long): eval asks none of them as a taught question
    stats["held_out_ids"] = [r["id"] for r in records if r["id"] not in trained]
    return TrainData(train, val, mode, source.format, source.describe(), split_by, len(rows) - len(kept), stats, probe)


def recall_probe(records: list[dict], count: int, seed: int) -> dict:
    """Up to `count` facts (and a tenth of the records) with three or more training phrasings (two
    where none has three): one phrasing of each is held out of training (asked after every epoch:
    does the fact come back in other words?) and another stays (is the taught question itself
    recalled?). Empty where no fact has two phrasings."""
    facts: dict[str, list[dict]] = {}
    for r in records:
        if r.get("fact"):
            facts.setdefault(r["fact"], []).append(r)
    rank = lambda key: hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()  # noqa: E731
    most = max((len(g) for g in facts.values()), default=0)
    least = 3 if most >= 3 else 2  # where facts have 3+ phrasings, the probe leaves each of its facts two taught
    eligible = [sorted(g, key=lambda r: rank(r["id"])) for g in facts.values() if len(g) >= least]
    groups = sorted(eligible, key=lambda g: rank(g[0]["fact"]))[: min(count, max(4, len(records) // 10))]
    if not groups:
        return {}
    return {"held_out": [g[0] for g in groups], "taught": [g[1] for g in groups]}


def read_text(data_dir: Path) -> list[dict]:
    """text.jsonl's rows (chunks and teacher rewrites), or none where the data has no such file."""
    path = data_dir / "text.jsonl"
    return read_jsonl(path, schema="text") if path.is_file() else []


def encode_text(tokenizer, text: str, max_length: int) -> list[dict]:
    """Plain text, then the end-of-sequence token, in pieces of at most max_length tokens; every token carries a label."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return [{"input_ids": ids[i : i + max_length], "completion_mask": [1] * len(ids[i : i + max_length])} for i in range(0, len(ids), max_length)]


def check_batch(batch: dict, where: str = "first training batch") -> None:
    """The same check on what the trainer really feeds the model (labels after collation)."""
    labels = batch["labels"]
    trained = int((labels != -100).sum())
    total = labels.numel()
    if trained == 0 or trained / total < MIN_TRAINED_SHARE:
        raise UserError(
            f"{where}: only {trained} of {total} labels are unmasked; the collator masks the answers — "
            "check --chat-template and that the data has assistant turns"
        )
