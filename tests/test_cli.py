import subprocess
import sys

from conftest import invoke

COMMANDS = ["import", "index", "mine", "score", "filter", "judge", "relabel", "export", "run", "config", "summary", "report", "prepare-model"]


def test_help_lists_every_command_with_a_description():
    out = invoke("--help").output
    for name in COMMANDS:
        line = next((x for x in out.splitlines() if x.strip().startswith(name + " ")), None)
        assert line and len(line.split(None, 1)[1]) > 10, f"{name} has no one-line description in --help"


def test_every_command_has_help():
    for name in COMMANDS:
        result = invoke(name, "--help")
        assert "Usage:" in result.output and "--" in result.output


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from hardneg.cli import app; from typer.testing import CliRunner; "
        "CliRunner().invoke(app, ['--help']); "
        "heavy = [m for m in ('torch', 'faiss', 'sentence_transformers', 'polars', 'pyarrow', 'bm25s', 'ray') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"--help imported {out}"


def test_readme_documents_every_command():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in COMMANDS:
        assert f"hardneg {name}" in readme, f"README does not show `hardneg {name}`"
