"""Command line: one small module per command, all registered on one Typer app. Heavy imports stay inside
the commands, so `hardneg --help` never loads torch, faiss or sentence-transformers."""

from hardneg.cli import (  # noqa: F401  (registers the commands, in this order)
    import_cmd,
    index_cmd,
    mine_cmd,
    score_cmd,
    filter_cmd,
    judge_cmd,
    relabel_cmd,
    export_cmd,
    run_cmd,
    summary_cmd,
    report_cmd,
    prepare_model_cmd,
)
from hardneg.cli.app import app


def main() -> None:
    app()
