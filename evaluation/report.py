"""The evaluation report: report.md, and report.html with its PNG plots embedded (base64).

Both are rendered from the same tables (lists of rows) built from metrics.json's content, so
they always say the same thing. Plots are drawn with matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from common.contract import METRICS, final_answer
from common.io import write_atomic


def fmt(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    if stat.get("lo") is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} [{stat['lo']:.3f}, {stat['hi']:.3f}]"


def num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------- tables (shared by md and html)


def metric_names(metrics: dict) -> list[str]:
    seen = {m for entry in metrics["models"].values() for m in entry.get("metrics", {})}
    return [m for m in METRICS if m in seen]


def score_table(metrics: dict) -> list[list[str]]:
    names = metric_names(metrics)
    rows = [["model", "role"] + [METRICS[m] for m in names]]
    for label, entry in metrics["models"].items():
        if entry["status"] != "ok":
            rows.append([label, entry["role"]] + [f"missing: {entry['reason']}"] + [""] * (len(names) - 1))
            continue
        role = f"{entry['role']} (*)" if entry.get("note") else entry["role"]
        rows.append([label, role] + [fmt(entry["metrics"].get(m)) for m in names])
    return rows


def perf_table(metrics: dict) -> list[list[str]]:
    rows = [["model", "name", "questions", "mean output tokens", "tokens/s", "questions/s", "wall s", "load s"]]
    for label, entry in metrics["models"].items():
        p = entry["perf"]
        rows.append([label, entry["name"], str(p["questions"]), num(p["mean_output_tokens"]), num(p["tokens_per_s"]), num(p["questions_per_s"], 2), num(p["wall_s"]), num(p["load_s"])])
    return rows


def gap_table(metrics: dict) -> list[list[str]]:
    if not metrics["gap_closed"]:
        return []
    names = [m for m in metric_names(metrics) if m != "pairwise_vs_teacher"]
    rows = [["student"] + [METRICS[m] for m in names]]
    for label, per in metrics["gap_closed"].items():
        rows.append([label] + [fmt(per.get(m)) for m in names])
    return rows


def taught_table(metrics: dict) -> list[list[str]]:
    """Recall of training questions (the taught phrasings of the test's facts), where measured."""
    taught = metrics.get("train_questions")
    return score_table({"models": taught["models"]}) if taught and taught["models"] else []


def document_recall(records: list[dict], runs: list, scores: dict) -> dict:
    """Per source document: its questions, and each answered model's mean exact match and contains-answer."""
    docs: dict[str, list[int]] = {}
    for q, record in enumerate(records):
        docs.setdefault((record.get("source") or {}).get("doc", "?"), []).append(q)
    out = {}
    for doc, qs in sorted(docs.items()):
        models = {}
        for run in (r for r in runs if r.status == "ok"):
            found = {m: [scores[run.label][q].get(m) for q in qs] for m in ("exact_match", "contains")}
            models[run.label] = {m: round(sum(v) / len(v), 4) for m, v in found.items() if v and None not in v}
        out[doc] = {"questions": len(qs), "models": models}
    return out


def document_table(metrics: dict, limit: int = 50) -> list[list[str]]:
    """Recall per document, the weakest first (by the first student's exact match): untaught parts stand out."""
    docs = metrics.get("per_document") or {}
    if len(docs) < 2:
        return []
    labels = list(next(iter(docs.values()))["models"])
    focus = next((label for label in labels if metrics["models"].get(label, {}).get("role") == "student"), labels[0] if labels else None)
    if focus is None:
        return []
    order = sorted(docs, key=lambda d: (docs[d]["models"].get(focus, {}).get("exact_match", 0), d))
    rows = [["document", "questions"] + [f"{label}: exact (contains)" for label in labels]]
    for doc in order[:limit]:
        cells = [f"{num(s.get('exact_match'), 2)} ({num(s.get('contains'), 2)})" for s in (docs[doc]["models"].get(label, {}) for label in labels)]
        rows.append([doc, str(docs[doc]["questions"])] + cells)
    return rows


def curve_table(metrics: dict) -> list[list[str]]:
    """Each student's recall after the epochs its training probed (the probe of `distill train`)."""
    rows = [["student", "epoch", "held-out phrasings (exact)", "taught questions (exact)", "held-out (contains)", "taught (contains)"]]
    for label, points in metrics.get("curves", {}).items():
        for p in points:
            rows.append([label, f"{p['epoch']:g}"] + [num(p.get(k), 3) for k in ("recall_val", "recall_train", "recall_val_contains", "recall_train_contains")])
    return rows if len(rows) > 1 else []


def example_table(records: list[dict], runs: list, scores: dict, count: int) -> tuple[list[list[str]], list[list[str]]]:
    """Best and worst questions for the first student (else the base), by token F1, side by side."""
    answered = [run for run in runs if run.status == "ok"]
    focus = next((r for r in answered if r.role == "student"), answered[0] if answered else None)
    if focus is None or count == 0:
        return [], []
    order = sorted(range(len(records)), key=lambda q: (scores[focus.label][q]["token_f1"], scores[focus.label][q].get("judge") or 0))
    header = ["question", "reference"] + [f"{run.label} (F1)" for run in answered]

    def rows(indices):
        out = [header]
        for q in indices:
            cells = [f"{final_answer(run.outputs[q])} ({scores[run.label][q]['token_f1']:.2f})" for run in answered]
            out.append([records[q]["question"], records[q]["answer"]] + cells)
        return out

    best = list(reversed(order))[:count]
    worst = [q for q in order[:count] if q not in best]
    return rows(best), rows(worst)


# ---------------------------------------------------------------- plots


def plot_scores(metrics: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = metric_names(metrics)
    models = [(label, e) for label, e in metrics["models"].items() if e["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(names) + 2), 4), dpi=100)
    width = 0.8 / max(1, len(models))
    for i, (label, entry) in enumerate(models):
        stats = [entry["metrics"].get(m) or {} for m in names]
        means = np.array([s.get("mean") or 0.0 for s in stats])
        lows = np.array([s.get("lo") if s.get("lo") is not None else m for s, m in zip(stats, means)])
        highs = np.array([s.get("hi") if s.get("hi") is not None else m for s, m in zip(stats, means)])
        ax.bar(np.arange(len(names)) + i * width, means, width, label=label, yerr=[means - lows, highs - means], capsize=3)
    ax.set_xticks(np.arange(len(names)) + width * (len(models) - 1) / 2, [METRICS[m] for m in names], rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95% bootstrap CI)")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_lengths(runs: list) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    answered = [run for run in runs if run.status == "ok" and run.tokens]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if answered:
        ax.boxplot([run.tokens for run in answered], tick_labels=[run.label for run in answered])
    ax.set_ylabel("output tokens")
    ax.set_title("answer length")
    return _png(fig)


def plot_curves(curves: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label, points in curves.items():
        epochs = [p["epoch"] for p in points]
        ax.plot(epochs, [p["recall_val"] for p in points], marker="o", label=f"{label}: held-out phrasings")
        ax.plot(epochs, [p["recall_train"] for p in points], marker="s", linestyle="--", label=f"{label}: taught questions")
    ax.set_xlabel("epoch")
    ax.set_ylabel("recall (exact match)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("recall while training")
    return _png(fig)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


# ---------------------------------------------------------------- rendering


def notes(metrics: dict) -> list[str]:
    lines = [f"mode: {metrics['mode']} (from {metrics['mode_source']}), {metrics['questions']} questions, greedy decoding"]
    if metrics.get("data_format"):
        lines.append(f"data: {metrics['data_source']}, format {metrics['data_format']}")
    for label, entry in metrics["models"].items():
        if entry["status"] != "ok":
            lines.append(f"{label} ({entry['name']}) is missing: {entry['reason']}")
        if entry.get("note"):
            lines.append(f"(*) {label}: {entry['note']}")
    lines += [f"{METRICS.get(k, k)}: {v}" for k, v in metrics.get("notes", {}).items()]
    if metrics["gap_closed"]:
        lines.append("gap closed = (student - base) / (teacher - base); 1 = as good as the teacher, 0 = no better than the base; n/a where the teacher does no better than the base")
    return lines


def markdown(metrics: dict, tables: dict, images: dict) -> str:
    def table(rows):
        cells = [[c.replace("|", "\\|").replace("\n", " ") for c in row] for row in rows]
        return "\n".join(["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])] + ["| " + " | ".join(r) + " |" for r in cells[1:]])

    parts = ["# distill eval report", "\n".join(f"- {line}" for line in notes(metrics))]
    for title, rows in tables.items():
        if rows:
            parts += [f"## {title}", table(rows)]
    parts += [f"![{name}]({name})" for name in images]
    return "\n\n".join(parts) + "\n"


def html_page(metrics: dict, tables: dict, images: dict) -> str:
    def table(rows):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    style = "body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}th{background:#f3f3f3}"
    parts = ["<h1>distill eval report</h1>", "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in notes(metrics)) + "</ul>"]
    for title, rows in tables.items():
        if rows:
            parts.append(f"<h2>{html.escape(title)}</h2>{table(rows)}")
    for name, data in images.items():
        parts.append(f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}">')
    return f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>distill eval report</title><style>{style}</style></head><body>{"".join(parts)}</body></html>\n'


def write_report(out: Path, metrics: dict, records: list[dict], runs: list, scores: dict) -> dict:
    """Write report.md, report.html and the PNG plots; returns the file names written."""
    count = metrics["config"]["examples"]
    best, worst = example_table(records, runs, scores, count)
    tables = {
        "scores (mean [95% bootstrap CI])": score_table(metrics),
        "gap closed (mean [95% bootstrap CI])": gap_table(metrics),
        f"training questions: recall of what was taught ({metrics.get('train_questions', {}).get('questions', 0)} questions)": taught_table(metrics),
        "recall while training (after the probed epochs)": curve_table(metrics),
        "recall per document, weakest first (exact match (contains answer))": document_table(metrics),
        "speed": perf_table(metrics),
        "best examples": best,
        "worst examples": worst,
    }
    images = {"scores.png": plot_scores(metrics), "lengths.png": plot_lengths(runs)}
    if metrics.get("curves"):
        images["recall.png"] = plot_curves(metrics["curves"])
    for name, data in images.items():
        (out / name).write_bytes(data)
    write_atomic(out / "report.md", markdown(metrics, tables, images))
    write_atomic(out / "report.html", html_page(metrics, tables, images))
    return {"report_md": "report.md", "report_html": "report.html", **{name.split(".")[0] + "_png": name for name in images}}
