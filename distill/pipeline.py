"""`distill run PIPELINE.yaml`: gen -> train (SFT) -> grpo -> eval from one file, each stage
skipped when its outputs are up to date.

The file has one section per stage (`gen:`, `train:`, `grpo:`, `eval:`), each holding that
stage's config keys; a missing section is a stage that does not run. The pipeline wires the
stages: gen.out becomes the data of every later stage, train.out is grpo's starting point
(`from_model`), the SFT and GRPO students are both eval's students (train.model eval's base),
gen's teacher is eval's teacher unless eval names one (or `teacher: null`).

Up to date means: the stage's output directory holds `stage.json` whose fingerprint (a hash of
the stage's resolved config and of its inputs: the document files for gen, the data manifest
(or, for data brought without one, the data read) for train, that and the starting model for
grpo, the data manifest and the students' run.json for eval) equals the one computed now,
and the stage's main output exists. The stamp is removed before a stage runs and written after
it succeeds, so a crashed stage runs again on the next `distill run`.

A stage that ends incomplete (gen's or eval's teacher or judge requests failed) stops the pipeline
with one line and exit code 3, before any stage trains on partial data; `allow_incomplete` goes on
with what was answered. Either way the incomplete stage gets no stamp: the next `distill run` runs it
again, and it sends only the failed requests. A gen stage that accepted nothing (status `empty`)
stops the pipeline with exit code 4, its reject reasons counted, whatever `allow_incomplete` says.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from common.config import deep_merge, parse_overrides, problems_of, read_yaml, redact
from common.errors import EmptyRun, IncompleteRun, UserError, failed_requests_line
from common.io import write_json

STAGES = ("gen", "train", "grpo", "eval")
STAMP = "stage.json"
MAIN_OUTPUT = {"gen": "manifest.json", "train": "run.json", "grpo": "run.json", "eval": "metrics.json"}


def load_sections(path: str | Path, overrides: list[str] | None = None) -> dict[str, dict]:
    """The pipeline file's sections (with `stage.key=value` overrides); unknown stages are errors."""
    data = deep_merge(read_yaml(path), parse_overrides(overrides or []))
    for stage, section in data.items():
        if stage not in STAGES:
            raise UserError(f"unknown stage '{stage}' in {path}; stages are: {', '.join(STAGES)}")
        if section is not None and not isinstance(section, dict):
            raise UserError(f"stage '{stage}' in {path} must be a mapping of config keys, not {type(section).__name__}")
    if not data:
        raise UserError(f"{path} names no stage; add at least one of: {', '.join(STAGES)}")
    return {stage: dict(data[stage] or {}) for stage in STAGES if stage in data}


def train_classes():
    """TrainConfig and run_sft, imported only when a pipeline trains."""
    from train.config import TrainConfig
    from train.sft import run_sft

    return TrainConfig, run_sft


def stage_models() -> dict[str, type[BaseModel]]:
    """The config model of every stage a pipeline file may hold."""
    from evaluation.config import EvalConfig
    from generate.config import GenConfig
    from train.grpo_config import GRPOConfig

    return {"gen": GenConfig, "train": train_classes()[0], "grpo": GRPOConfig, "eval": EvalConfig}


def resolve(sections: dict[str, dict]) -> dict[str, BaseModel]:
    """Every stage's validated config, wired to the stages before it. Every problem of every
    section is reported at once, before any stage runs."""
    from evaluation.config import EvalConfig
    from generate.config import GenConfig
    from train.grpo_config import GRPOConfig

    wanted, problems = {}, []
    data = key_of(GenConfig, sections["gen"], "out") if "gen" in sections else None
    if "gen" in sections:
        wanted["gen"] = (GenConfig, sections["gen"])
    if "train" in sections:
        wanted["train"] = (train_classes()[0], wire(sections["train"], "train", "data", data, problems))
    students = []  # what eval compares, in stage order
    if "train" in sections:
        TrainConfig, train = wanted["train"]
        students.append(key_of(TrainConfig, train, "out"))
    if "grpo" in sections:
        grpo = wire(sections["grpo"], "grpo", "data", data, problems)
        if students:
            grpo.setdefault("from_model", students[0])  # GRPO refines the SFT student
        elif grpo.get("from_model") is None:
            problems.append("grpo.from_model: GRPO refines an SFT student: add a train section, or set "
                            "grpo.from_model to an SFT output (or, to start from an untrained base, to embedded "
                            "or a model id)")
        wanted["grpo"] = (GRPOConfig, grpo)
        students.append(key_of(GRPOConfig, grpo, "out"))
    if "eval" in sections:
        section = wire(sections["eval"], "eval", "data", data, problems)
        listed = list(section.get("students") or [])
        section["students"] = listed + [s for s in students if s not in listed]
        if "train" in sections:
            section.setdefault("base", key_of(wanted["train"][0], wanted["train"][1], "model"))
        if "gen" in sections and "teacher" not in section:
            section["teacher"] = sections["gen"].get("teacher") or {}
        wanted["eval"] = (EvalConfig, section)
    for stage, (model, section) in wanted.items():
        problems += problems_of(model, section, f"{stage}.")
    if len(problems) == 1:
        raise UserError(problems[0])
    if problems:
        raise UserError(f"{len(problems)} problems in the pipeline file, nothing was run: " + "; ".join(problems))
    return {stage: model.model_validate(section) for stage, (model, section) in wanted.items()}


def key_of(model: type[BaseModel], section: dict, key: str) -> Any:
    """A key of a section as the stage will see it: given, or the config's default."""
    return section.get(key, model.model_fields[key].default)


def wire(section: dict, stage: str, key: str, value: Any, problems: list[str]) -> dict:
    """Fill `stage.key` from the previous stage; a conflicting explicit value is a problem."""
    section = dict(section)
    if value is None:
        return section
    if section.get(key) not in (None, value):
        problems.append(f"{stage}.{key} is {section[key]!r} but gen.out is {value!r}; remove {stage}.{key}: the pipeline passes gen.out")
    section[key] = value
    return section


# ---------------------------------------------------------------- fingerprints


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def stage_inputs(stage: str, cfg: BaseModel) -> dict:
    """What a stage reads, as digests: a changed input makes the stage stale."""
    if stage == "gen":
        from generate.ingest import discover

        return {str(p): file_digest(p) for p in discover(cfg.inputs)}
    manifest = data_digest(Path(cfg.data), cfg.split)
    if stage == "train":
        return manifest
    if stage == "grpo":
        return {**manifest, "from": model_digest(Path(cfg.from_model))}
    return {**manifest, **{name: model_digest(Path(name)) for name in cfg.students}}


def data_digest(data: Path, split: str) -> dict:
    """The data manifest's digest; for data brought without one (docs/train.md), the digest of what the stage reads."""
    if (data / "manifest.json").is_file() or not data.exists():
        return {"manifest": file_digest(data / "manifest.json")}
    from common import formats

    return {"data": formats.load(data, split).sha256}


def model_digest(folder: Path) -> str:
    """A trained model's run.json; without one, the names, sizes and times of its files (cheap)."""
    if (folder / "run.json").is_file() or not folder.is_dir():
        return file_digest(folder / "run.json")
    listing = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def fingerprint(stage: str, cfg: BaseModel) -> str:
    blob = json.dumps({"stage": stage, "config": cfg.model_dump(mode="json"), "inputs": stage_inputs(stage, cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def stamp_path(cfg: BaseModel) -> Path:
    return Path(cfg.out) / STAMP


def up_to_date(stage: str, cfg: BaseModel, digest: str) -> bool:
    stamp = stamp_path(cfg)
    if not stamp.is_file() or not (Path(cfg.out) / MAIN_OUTPUT[stage]).exists():
        return False
    return json.loads(stamp.read_text()).get("fingerprint") == digest


# ---------------------------------------------------------------- running


def train_run_flags(cfg: BaseModel) -> BaseModel:
    """A stale train stage continues its own crashed run (resume) and replaces a finished run
    that is out of date (overwrite: its config or its data changed); an incomplete one runs again."""
    fields = type(cfg).model_fields
    update = {"resume": True} if "resume" in fields else {}
    run = Path(cfg.out, "run.json")
    if "overwrite" in fields and run.exists() and json.loads(run.read_text()).get("status") != "incomplete":
        update["overwrite"] = True  # an incomplete GRPO run keeps its judge cache: rerun, it asks only the failed requests
    return cfg.model_copy(update=update)


def run_stage(stage: str, cfg: BaseModel, show_progress: bool) -> dict:
    if stage == "gen":
        from generate.ray_stage import run_gen_ray
        from generate.stage import run_gen

        return run_gen_ray(cfg, show_progress) if cfg.ray else run_gen(cfg, show_progress=show_progress)
    if stage == "train":
        return train_classes()[1](cfg, show_progress=show_progress)
    if stage == "grpo":
        from train.grpo import run_grpo

        return run_grpo(cfg, show_progress=show_progress)
    from evaluation.stage import run_eval

    return run_eval(cfg, show_progress=show_progress)


def one_process(configs: dict) -> None:
    """`gpus` above 1 is for `distill train`/`grpo` (which relaunch themselves under torchrun): a pipeline's
    gen and eval must not run once a rank, so `distill run` refuses it before any stage runs."""
    from distill import launch

    for stage in ("train", "grpo"):
        gpus = getattr(configs.get(stage), "gpus", 1)
        if gpus > 1 and not launch.inside_launch():
            raise UserError(
                f"{stage}.gpus={gpus}: distill run trains in one process; train on {gpus} GPUs with "
                f"`distill {stage} ... --gpus {gpus}` and leave gpus out of the pipeline file"
            )


def run_pipeline(
    path: str | Path, overrides: list[str] | None = None, force: tuple[str, ...] = (), show_progress: bool = True, log: Callable[[str], None] = print, allow_incomplete: bool = False
) -> dict[str, dict]:
    """Run every configured stage in order; returns {stage: {'status': 'ran'|'skipped', 'result': ...}}."""
    configs = resolve(load_sections(path, overrides))
    unknown = set(force) - set(configs)
    if unknown:
        raise UserError(f"--force names stage(s) {', '.join(sorted(unknown))} that {path} does not configure")
    trains = [configs[s] for s in ("train", "grpo") if s in configs]
    one_process(configs)
    if trains:  # Unsloth must be imported before gen and eval import transformers
        from train.recipe import choose_backend

        choose_backend(trains[0])
    done: dict[str, dict] = {}
    for stage, cfg in configs.items():
        digest = fingerprint(stage, cfg)
        if stage not in force and up_to_date(stage, cfg, digest):
            log(f"{stage}: up to date, skipped ({stamp_path(cfg)})")
            done[stage] = {"status": "skipped", "result": json.loads((Path(cfg.out) / MAIN_OUTPUT[stage]).read_text())}
            continue
        stamp_path(cfg).unlink(missing_ok=True)
        if stage in ("train", "grpo"):
            cfg = train_run_flags(cfg)
        log(f"{stage}: running")
        started = time.time()
        result = run_stage(stage, cfg, show_progress)
        if result.get("status") == "interrupted":
            raise KeyboardInterrupt
        for warning in result.get("warnings", []):
            log(f"{stage}: warning: {warning}")
        if result.get("status") == "empty":
            from generate.verdict import empty_message

            raise EmptyRun(f"{stage}: {empty_message(result)}")
        if result.get("status") == "incomplete":
            check_incomplete(stage, result, allow_incomplete, log)
            done[stage] = {"status": "ran", "result": result, "seconds": round(time.time() - started, 3)}
            continue  # no stamp: the next distill run sends the failed requests again
        stamp = {"stage": stage, "fingerprint": digest, "finished": time.time(), "wall_time_s": round(time.time() - started, 3), "config": redact(cfg.model_dump(mode="json"))}
        write_json(stamp_path(cfg), stamp)
        done[stage] = {"status": "ran", "result": result, "seconds": stamp["wall_time_s"]}
    return done


def check_incomplete(stage: str, result: dict, allow_incomplete: bool, log: Callable[[str], None]) -> None:
    """Stop before the next stage uses partial data (or a policy that missed judge rewards), unless told to go on."""
    if stage == "grpo":
        from train.grpo import incomplete_message

        line, failed = incomplete_message(result), result["judge_failures"]["requests"]
    else:
        what = "teacher or judge request" if stage == "eval" else "teacher request"
        line, failed = failed_requests_line(result["failures"], what), result["failures"]["requests"]
    if not allow_incomplete:
        raise IncompleteRun(f"{stage}: {line}, or pass --allow-incomplete to go on with what was answered")
    log(f"{stage}: incomplete, {failed} requests failed; going on with what was answered (--allow-incomplete)")
