"""Regenerate the result tables of bench/README.md from bench/results/*.json.

    python bench/tables.py            # rewrites every <!-- BEGIN name --> ... <!-- END name --> block

A block named `hidden_positive-nfcorpus` is rendered from `bench/results/hidden_positive-nfcorpus.json` by
`bench/hidden_positive.py::render`; add a renderer to RENDERERS for another benchmark's blocks.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BLOCK = re.compile(r"(<!-- BEGIN (?P<name>[\w.-]+) -->\n)(.*?)(<!-- END (?P=name) -->)", re.S)


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render_block(name: str) -> str:
    """The Markdown of block `name`: the renderer is the script named by its prefix (`hidden_positive-...`)."""
    script = name.split("-", 1)[0]
    path = BENCH / "results" / f"{name}.json"
    if not path.exists():
        return f"_No results yet: run `python bench/{script}.py` (writes {path.relative_to(BENCH.parent)})._\n"
    return _module(script).render(json.loads(path.read_text()))


def main(readme: Path = BENCH / "README.md") -> None:
    text = readme.read_text()
    new = BLOCK.sub(lambda m: m.group(1) + render_block(m.group("name")) + m.group(4), text)
    if new != text:
        readme.write_text(new)
    print(f"{readme}: {len(BLOCK.findall(text))} blocks", file=sys.stderr)


if __name__ == "__main__":
    main()
