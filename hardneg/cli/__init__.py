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
    config_cmd,
    summary_cmd,
    report_cmd,
    prepare_model_cmd,
)
from hardneg.cli.app import app


def main() -> None:
    """The `hardneg` entry point. SIGTERM is turned into the same clean stop as Ctrl-C (one line, exit 143 / 130,
    finished parts kept); after an interrupt the process ends at once, so no library's destructor (tqdm bars, Ray,
    torch threads) prints anything or delays the exit."""
    import os
    import signal
    import sys

    from hardneg.cli.app import Interrupted

    def on_term(signum, frame):
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        app()
    except SystemExit as exc:
        if exc.code in (130, 143):
            _stop_ray()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.code)
        raise


def _stop_ray() -> None:
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        try:
            ray.shutdown()
        except BaseException:  # an interrupt during shutdown: the raylet notices its driver is gone
            pass
