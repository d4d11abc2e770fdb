"""Write the quickstart corpus: sections of the Python language reference that every CPython
carries (module `pydoc_data.topics`), as Markdown files.

Run: python examples/make_corpus.py runs/demo/docs
"""

import pydoc_data.topics
import sys
from pathlib import Path

TOPICS = ("while", "for", "if", "try", "with", "assert", "return", "import", "global", "lambda", "del", "pass")


def main(out: str) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOPICS:
        text = pydoc_data.topics.topics[name]
        (folder / f"{name}.md").write_text(f"# The {name} statement\n\n{text}")
    print(f"wrote {len(TOPICS)} documents to {folder}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/docs")
