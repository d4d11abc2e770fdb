"""Write the quickstart corpus: short Markdown pages about invented towns, engines, protocols, guilds
and tools, five facts a page (bench/knowledge_corpus.py draws them from a seed).

Run: python examples/make_corpus.py runs/demo/docs [--pages 12] [--seed 0]
     python examples/make_corpus.py runs/demo/docs --python-reference   (12 topics of CPython's reference)

Why invented facts: no model can know them before training, so what the student answers after
training it learned from these documents, and the 135M embedded teacher can write questions a
student learns from about sentences this plain (on CPython's reference its questions about a fact
were often unrelated to each other, so no held-out wording could be learned: docs/benchmarks.md,
"The quickstart"). The pages only are written here (an answer key in the folder would be read as a
document); bench/knowledge_corpus.py writes the key too.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ("while", "for", "if", "try", "with", "assert", "return", "import", "global", "lambda", "del", "pass")


def python_reference(folder: Path) -> int:
    import pydoc_data.topics

    for name in TOPICS:
        text = pydoc_data.topics.topics[name]
        (folder / f"{name}.md").write_text(f"# The {name} statement\n\n{text}")
    return len(TOPICS)


def invented(folder: Path, pages: int, seed: int) -> int:
    sys.path.insert(0, str(ROOT / "bench"))
    from knowledge_corpus import build

    written, _, _ = build(pages, facts_per_page=5, untaught=0, seed=seed)
    for file, text in written.items():
        (folder / file).write_text(text)
    return len(written)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="runs/demo/docs")
    parser.add_argument("--pages", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--python-reference", action="store_true", help="the old corpus: CPython's language reference")
    args = parser.parse_args()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    count = python_reference(folder) if args.python_reference else invented(folder, args.pages, args.seed)
    print(f"wrote {count} documents to {folder}")


if __name__ == "__main__":
    main()
