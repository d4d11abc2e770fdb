"""`distill eval` end to end on tiny random models: predictions, metrics, report, lm-eval task, bad input."""

import base64
import importlib.util
import io
import json
from html.parser import HTMLParser

import pytest
import torch
import yaml
from PIL import Image

from common.errors import UserError
from common.teacher.config import TeacherConfig
from distill.cli import main
from evaluation.config import EvalConfig
from evaluation.stage import run_eval

from tiny_models import one_thread, record, tiny_adapter, tiny_model

QUESTIONS = [
    ("How many times does the loop run?", "3"),
    ("Which keyword ends a loop early?", "break"),
    ("What does `pass` do?", "Nothing; it is a placeholder."),
    ("Which statement handles exceptions?", "The try statement"),
    ("How many arguments does range take at most?", "3 arguments"),
    ("Café or cafe?", "Café"),
]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    previous = one_thread()
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    base = tiny_model(root / "base", seed=0)
    teacher = tiny_model(root / "teacher", seed=1)
    adapter = tiny_adapter(root / "student", base)
    data = root / "data"
    data.mkdir()
    (data / "test.jsonl").write_text("".join(json.dumps(record(n, q, a)) + "\n" for n, (q, a) in enumerate(QUESTIONS)))
    (data / "manifest.json").write_text(json.dumps({"split_by": "item"}))
    return {"root": root, "base": base, "teacher": teacher, "adapter": adapter, "data": data}


def small(world, out, **extra):
    fields = dict(data=str(world["data"]), out=str(world["root"] / out), max_new_tokens=12, bootstrap_samples=200, batch_size=4)
    return EvalConfig(**{**fields, **extra})


@pytest.fixture(scope="module")
def evaluated(world):
    teacher = TeacherConfig(backend="local", model=str(world["teacher"]))
    cfg = small(world, "eval", students=[str(world["adapter"])], teacher=teacher, judge=True, pairwise=True)
    return cfg, run_eval(cfg, show_progress=False)


def test_every_model_answers_and_is_graded(world, evaluated):
    cfg, metrics = evaluated
    assert metrics["mode"] == "closed-book" and metrics["mode_source"] == "split_by=item"
    assert list(metrics["models"]) == ["base", "student", "teacher"]
    assert metrics["models"]["base"]["name"] == str(world["base"])  # found through adapter_config.json
    assert "closed-book" in metrics["models"]["teacher"]["note"]
    for label, entry in metrics["models"].items():
        assert entry["status"] == "ok"
        assert entry["metrics"]["token_f1"]["n"] == len(QUESTIONS)
        assert entry["metrics"]["judge"]["n"] == len(QUESTIONS)  # the judge's JSON is grammar-constrained
        assert entry["perf"]["output_tokens"] > 0 and entry["perf"]["tokens_per_s"] > 0
    assert metrics["models"]["student"]["metrics"]["pairwise_vs_teacher"]["n"] == len(QUESTIONS)
    assert "pairwise_vs_teacher" not in metrics["models"]["teacher"]["metrics"]
    assert set(metrics["gap_closed"]) == {"student"}
    rows = [json.loads(line) for line in open(f"{cfg.out}/predictions.jsonl")]
    assert len(rows) == 3 * len(QUESTIONS)
    f1 = [r["scores"]["token_f1"] for r in rows if r["model"] == "base"]
    assert metrics["models"]["base"]["metrics"]["token_f1"]["mean"] == pytest.approx(sum(f1) / len(f1))


def test_eval_reports_what_grpo_rewards(evaluated):
    """`correctness` in eval is GRPO's correctness reward on the same outputs: per answer and on average."""
    from common.graders import correctness_reward

    cfg, metrics = evaluated
    rows = [json.loads(line) for line in open(f"{cfg.out}/predictions.jsonl")]
    for label in metrics["models"]:
        mine = [r for r in rows if r["model"] == label]
        rewards = correctness_reward(None, [r["output"] for r in mine], answer=[r["reference"] for r in mine])
        assert [r["scores"]["correctness"] for r in mine] == rewards
        assert metrics["models"][label]["metrics"]["correctness"]["mean"] == pytest.approx(sum(rewards) / len(rewards))
    assert "correctness (GRPO reward)" in open(f"{cfg.out}/report.md").read()


def test_a_rerun_asks_the_teacher_and_the_judge_nothing(world, evaluated, monkeypatch):
    """Teacher answers and judge verdicts come from the cache on a rerun: no backend is even made."""
    from common.teacher import ask

    cfg, metrics = evaluated

    def no_backend(teacher_cfg):
        raise AssertionError("a rerun must answer every teacher and judge request from the cache")

    monkeypatch.setattr(ask, "make_teacher", no_backend)
    again = run_eval(cfg, show_progress=False)
    assert again["models"]["teacher"]["status"] == "ok" and "judge" not in again["notes"]
    for label in metrics["models"]:
        assert again["models"][label]["metrics"] == metrics["models"][label]["metrics"]


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables = [], 0

    def handle_starttag(self, tag, attrs):
        self.tables += tag == "table"
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_report_renders(evaluated):
    cfg, metrics = evaluated
    page = Images()
    page.feed(open(f"{cfg.out}/report.html").read())
    page.close()
    assert page.tables >= 4  # scores, gap closed, speed, examples
    assert len(page.images) == 2
    for src in page.images:
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "PNG" and image.size[0] > 100
    markdown = open(f"{cfg.out}/report.md").read()
    assert "| model | role |" in markdown and "gap closed" in markdown and "closed-book" in markdown
    assert Image.open(f"{cfg.out}/scores.png").format == "PNG"


def test_lm_eval_task_scores_like_distill_eval(evaluated):
    cfg, metrics = evaluated
    loader = type("Loader", (yaml.SafeLoader,), {})
    loader.add_constructor("!function", lambda load, node: ("function", load.construct_scalar(node)))
    task = yaml.load(open(f"{cfg.out}/lm_eval/distill_test.yaml"), Loader=loader)
    assert task["process_results"] == ("function", "utils.process_results")
    docs = [json.loads(line) for line in open(task["dataset_kwargs"]["data_files"]["test"])]
    assert [d["prompt"] for d in docs] == [q for q, _ in QUESTIONS]  # closed-book: the question alone
    spec = importlib.util.spec_from_file_location("lm_utils", f"{cfg.out}/lm_eval/utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    rows = [json.loads(line) for line in open(f"{cfg.out}/predictions.jsonl")]
    for row in rows:
        doc = next(d for d in docs if d["id"] == row["id"])
        lm_scores = utils.process_results(doc, [row["output"]])
        assert lm_scores == {k: v for k, v in row["scores"].items() if k in lm_scores}
    for metric in ("exact_match", "token_f1", "numeric"):
        student = [utils.process_results(next(d for d in docs if d["id"] == r["id"]), [r["output"]])[metric] for r in rows if r["model"] == "student"]
        aggregate = utils.mean_defined(student) if metric == "numeric" else sum(student) / len(student)
        assert aggregate == pytest.approx(metrics["models"]["student"]["metrics"][metric]["mean"])


def test_unreachable_teacher_is_reported_missing(world):
    teacher = TeacherConfig(backend="openai", model="nobody", base_url=["http://127.0.0.1:9/v1"], max_retries=0, timeout_s=2)
    cfg = small(world, "eval-missing", teacher=teacher, mode="open-book", max_questions=2)
    metrics = run_eval(cfg, show_progress=False)
    assert metrics["mode"] == "open-book" and metrics["questions"] == 2
    assert metrics["models"]["base"]["status"] == "ok"
    assert metrics["models"]["teacher"]["status"] == "missing" and metrics["models"]["teacher"]["reason"]
    assert metrics["gap_closed"] == {}
    assert "teacher (nobody) is missing" in open(f"{cfg.out}/report.md").read()


def test_bad_input_is_one_line_error(world, tmp_path, capsys):
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not a model directory"):
        run_eval(small(world, "bad", students=[str(not_a_model)]))
    with pytest.raises(UserError, match="has no test.jsonl"):
        run_eval(EvalConfig(data=str(tmp_path), out=str(tmp_path / "out")))
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(world["data"]), "--student", str(not_a_model), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not a model directory" in err and len(err.strip().splitlines()) == 1


def test_lm_eval_harness_loads_the_task(evaluated):
    """Where lm-evaluation-harness is installed (extra `lmeval`), it reads the task and scores with distill's graders."""
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    cfg, metrics = evaluated
    manager = TaskManager(include_path=f"{cfg.out}/lm_eval")
    loaded = manager.load(["distill_test"])["tasks"] if hasattr(manager, "load") else manager.load_task_or_group(["distill_test"])
    task = loaded["distill_test"]
    docs = list(task.test_docs())
    assert [d["answer"] for d in docs] == [a for _, a in QUESTIONS]
    rows = [json.loads(line) for line in open(f"{cfg.out}/predictions.jsonl") if json.loads(line)["model"] == "teacher"]
    for doc, row in zip(docs, rows):
        assert task.process_results(doc, [row["output"]]) == {k: v for k, v in row["scores"].items() if k in task.aggregation()}


@pytest.mark.slow
def test_lm_eval_harness_agrees_with_distill_eval(world, tmp_path):
    """The harness, run on the embedded model with the written task, gives distill eval's scores."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    from common.models import resolve_model

    cfg = small(world, "eval-harness", base="embedded", max_new_tokens=32, max_questions=4)
    metrics = run_eval(cfg, show_progress=False)
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={resolve_model('embedded')},dtype=float32",
        tasks=["distill_test"],
        task_manager=TaskManager(include_path=f"{cfg.out}/lm_eval"),
        apply_chat_template=True,
        device="cpu",
    )["results"]["distill_test"]
    for metric in ("exact_match", "token_f1", "contains", "format"):
        assert results[f"{metric},none"] == pytest.approx(metrics["models"]["base"]["metrics"][metric]["mean"])


def test_recall_per_document_shows_the_weakest_documents_first():
    from types import SimpleNamespace

    from evaluation.report import document_recall, document_table

    records = [{"source": {"doc": doc}} for doc in ("a.md", "a.md", "b.md", "b.md", "c.md")]
    runs = [SimpleNamespace(label="student", status="ok"), SimpleNamespace(label="base", status="ok"), SimpleNamespace(label="t", status="missing")]
    hits = {"student": [1, 1, 0, 1, 0], "base": [0, 0, 0, 0, 0]}
    scores = {label: [{"exact_match": h, "contains": h} for h in row] for label, row in hits.items()}
    per_doc = document_recall(records, runs, scores)
    assert per_doc["b.md"] == {"questions": 2, "models": {"student": {"exact_match": 0.5, "contains": 0.5}, "base": {"exact_match": 0.0, "contains": 0.0}}}
    rows = document_table({"per_document": per_doc, "models": {"student": {"role": "student"}, "base": {"role": "base"}}})
    assert [row[0] for row in rows[1:]] == ["c.md", "b.md", "a.md"]  # untaught parts stand out: weakest first
    assert rows[1][2] == "0.00 (0.00)" and rows[3][2] == "1.00 (1.00)"


def test_the_report_has_recall_per_document(evaluated):
    _, metrics = evaluated
    assert sum(entry["questions"] for entry in metrics["per_document"].values()) == len(QUESTIONS)
