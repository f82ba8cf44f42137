"""The filter rules, each written once: `RULES`, read by the filter (`hardneg.stages.filter.filter_table`), the config
(`hardneg.config.validate`), the CLI's `--rule` (its choices and help), the report, `schemas.DROP_REASONS` and the rule
table of docs/filters.md (`markdown_table`).

A rule drops a candidate when its `condition` holds: a polars expression over the filter's columns `teacher_score`
(s, the candidate's teacher score), `_pos` (p, its query's reference positive score, see
`hardneg.scores.positive_reference`), `rank` (the retriever's 1-based rank) and `_dup` (the near-duplicate
mask). A rule has two spellings: its `name` (`perc-pos`, in the CLI and configs) and its `reason` (`perc_pos`, the one
the filtered table's `reason` column records); `lookup` takes either.

A new rule is one `register(Rule(...))`: its condition may read only keys that `hardneg.config.FilterConfig` has (they
are its `fields`). Nothing here imports polars until a condition is built, so `hardneg --help` stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hardneg.errors import HardnegError

if TYPE_CHECKING:
    import polars as pl

Config = Any  # a hardneg.config.FilterConfig (or anything with its attributes)


def _no_check(cfg: Config, source: str) -> None:
    pass


@dataclass(frozen=True)
class Rule:
    name: str  # CLI and config spelling: perc-pos
    reason: str  # what the filtered table's `reason` column says of a candidate it drops: perc_pos
    summary: str  # when it drops a candidate, in one line (CLI help, docs table, report)
    condition: Callable[[Config], pl.Expr]  # True where the rule drops the row
    fields: tuple[str, ...] = ()  # the FilterConfig keys it reads
    text: Callable[[Config], str] | None = None  # the rule with its values (report); default: summary and values
    check: Callable[[Config, str], None] = _no_check  # raise HardnegError (naming `source`) on values it cannot use
    margin: Callable[[Config], pl.Expr] | None = None  # its threshold on s − p (report's margin plot), if it has one
    score_threshold: Callable[[Config], float | None] | None = None  # its threshold on s (report's score plot)
    whole_pool: bool = False  # it reads every candidate of a query (score's adaptive depth then scores them all)

    def __post_init__(self):
        if self.text is None:
            object.__setattr__(self, "text", self._summary_with_values)

    def _summary_with_values(self, cfg: Config) -> str:
        values = ", ".join(f"{k} = {getattr(cfg, k)}" for k in self.fields)
        return f"drop if {self.summary}" + (f" ({values})" if values else "")


RULES: dict[str, Rule] = {}  # by name, in registration order (the order of CLI help and docs)


def _spellings(rule: Rule) -> set[str]:
    return {rule.name, rule.name.replace("-", "_"), rule.reason}


def register(rule: Rule) -> Rule:
    """Add `rule` to `RULES`. A spelling of it (name, name with underscores, reason) that is already one of another
    rule's is refused: `lookup` must find one rule."""
    for other in RULES.values():
        if _spellings(rule) & _spellings(other):
            raise ValueError(f"filter rule {rule.name!r} ({rule.reason}): {other.name!r} ({other.reason}) is "
                             f"registered under the same name or reason")
    RULES[rule.name] = rule
    return rule


def unregister(name: str) -> Rule:
    return RULES.pop(lookup(name).name)


def lookup(name: str) -> Rule:
    """The rule called `name`: its name (`perc-pos`), its reason (`perc_pos`) or its name with underscores."""
    for rule in RULES.values():
        if name in _spellings(rule):
            return rule
    raise HardnegError(f"unknown filter rule {name!r}; choose from {', '.join(RULES)}")


def parse(value: str) -> str:
    """The CLI's --rule value -> the rule's name; a ValueError naming the choices for an unknown one."""
    try:
        return lookup(value).name
    except HardnegError as exc:
        raise ValueError(str(exc)) from None


def reasons() -> tuple[str, ...]:
    return tuple(r.reason for r in RULES.values())


def markdown_table() -> str:
    """The rule table of docs/filters.md (tests/test_rules.py checks that the file has exactly this)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = ["| rule | drops a candidate when | reads | reason |", "|---|---|---|---|"]
    rows += [f"| `{r.name}` | {cell(r.summary)} | {', '.join(f'`{k}`' for k in r.fields)} | `{r.reason}` |"
             for r in RULES.values()]
    return "\n".join(rows) + "\n"


def help_text() -> str:
    """The CLI's `--rule` help: every registered rule and its summary."""
    return ("Rule to apply (repeat for several; the first that fires is the row's reason; s = the candidate's teacher "
            "score, p = its query's reference positive score): "
            + "; ".join(f"{r.name} drops if {r.summary}" for r in RULES.values()) + ".")


# -- the rules ---------------------------------------------------------------------------------------------------
# conditions and margins import polars when called, so importing this module (config, CLI) stays light

def _score():
    import polars as pl

    return pl.col("teacher_score")


def _positive():
    import polars as pl

    return pl.col("_pos")


def _constant(x: float) -> pl.Expr:
    import polars as pl

    return pl.lit(x)


def _perc_pos(cfg: Config) -> pl.Expr:
    s, p = _score(), _positive()
    return s > p - p.abs() * (1 - cfg.ratio)


def _margin_pos(cfg: Config) -> pl.Expr:
    return _score() > _positive() - cfg.margin


def _rank_window(cfg: Config) -> pl.Expr:
    import polars as pl

    rank = pl.col("rank")
    below = (rank <= cfg.rank_min) if cfg.rank_min is not None else pl.lit(False)
    return below | ((rank > cfg.rank_max) if cfg.rank_max is not None else pl.lit(False))


def _positive_rank(cfg: Config) -> pl.Expr:
    import polars as pl

    s, positive = _score(), pl.col("is_positive")
    best = s.filter(positive).max().over("query_id")
    return (~positive & (s > best)).sum().over("query_id") >= cfg.max_positive_rank


def _near_duplicate(cfg: Config) -> pl.Expr:
    import polars as pl

    return pl.col("_dup")


def _needs(key: str, rule: str) -> Callable[[Config, str], None]:
    def check(cfg: Config, source: str) -> None:
        if getattr(cfg, key) is None:
            raise HardnegError(f"{source}: rule {rule} needs a value: pass --{key.replace('_', '-')} X")
    return check


def _check_ratio(cfg: Config, source: str) -> None:
    if not 0 < cfg.ratio <= 1:
        raise HardnegError(f"{source}: ratio = {cfg.ratio} must be in (0, 1] (perc-pos drops a candidate scoring "
                           f"above p − |p|·(1 − ratio), p its positive's score; 0.95 is the usual choice)")


def _check_min_score(cfg: Config, source: str) -> None:
    _needs("min_score", "min-score")(cfg, source)
    if cfg.max_score is not None and cfg.min_score >= cfg.max_score:
        raise HardnegError(f"{source}: min_score = {cfg.min_score} is not below max_score = {cfg.max_score}; "
                           f"every candidate would be dropped")


def _check_rank_window(cfg: Config, source: str) -> None:
    if cfg.rank_min is None and cfg.rank_max is None:
        raise HardnegError(f"{source}: rule rank-window needs a bound: pass --rank-min N and/or --rank-max N")
    if cfg.rank_min is not None and cfg.rank_min < 0:
        raise HardnegError(f"{source}: rank_min must be >= 0 (the best-ranked candidates skipped); got {cfg.rank_min}")
    if cfg.rank_min is not None and cfg.rank_max is not None and cfg.rank_min >= cfg.rank_max:
        raise HardnegError(f"{source}: rank_min = {cfg.rank_min} is not below rank_max = {cfg.rank_max}; the window "
                           f"keeps ranks rank_min + 1 .. rank_max")


def _check_dup(cfg: Config, source: str) -> None:
    if cfg.dup_threshold is not None and not -1 <= cfg.dup_threshold <= 1:
        raise HardnegError(f"{source}: dup_threshold = {cfg.dup_threshold} is a cosine; give a value in [-1, 1]")


def _rank_window_text(cfg: Config) -> str:
    bounds = ([f"rank <= {cfg.rank_min}"] if cfg.rank_min is not None else []) + (
        [f"rank > {cfg.rank_max}"] if cfg.rank_max is not None else [])
    return "drop if " + " or ".join(bounds)


register(Rule(
    "perc-pos", "perc_pos", "s > p − |p|·(1 − ratio) (NV-Retriever's TopK-PercPos; = ratio·p for p > 0)",
    _perc_pos, fields=("ratio",), check=_check_ratio, text=lambda cfg: f"drop if s > p − |p|·(1 − {cfg.ratio})",
    margin=lambda cfg: -_positive().abs() * (1 - cfg.ratio)))
register(Rule(
    "margin-pos", "margin_pos", "s > p − margin (TopK-MarginPos)",
    _margin_pos, fields=("margin",), text=lambda cfg: f"drop if s > p − {cfg.margin}",
    margin=lambda cfg: _constant(-cfg.margin)))
register(Rule(
    "max-score", "above_max_score", "s > max_score (TopK-Abs)",
    lambda cfg: _score() > cfg.max_score, fields=("max_score",), check=_needs("max_score", "max-score"),
    text=lambda cfg: f"drop if s > {cfg.max_score}", score_threshold=lambda cfg: cfg.max_score))
register(Rule(
    "min-score", "below_min_score", "s < min_score (too easy to teach anything)",
    lambda cfg: _score() < cfg.min_score, fields=("min_score",), check=_check_min_score,
    text=lambda cfg: f"drop if s < {cfg.min_score}", score_threshold=lambda cfg: cfg.min_score))
register(Rule(
    "rank-window", "outside_rank_window",
    "rank <= rank_min or rank > rank_max (it keeps ranks rank_min + 1 .. rank_max, as mine's range_min / range_max)",
    _rank_window, fields=("rank_min", "rank_max"), check=_check_rank_window, text=_rank_window_text))
register(Rule(
    "positive-rank", "positive_outranked",
    "the teacher scores max_positive_rank or more candidates above the query's best positive: the query leaves the "
    "training file (a consistency filter: the teacher disagrees with its label, so its negatives would be guesses)",
    _positive_rank, fields=("max_positive_rank",), check=_needs("max_positive_rank", "positive-rank"),
    text=lambda cfg: f"drop the query if >= {cfg.max_positive_rank} candidates score above its best positive",
    whole_pool=True))
register(Rule(
    "near-duplicate", "near_duplicate_of_positive",
    "its normalized text (case, punctuation and spacing ignored) is a positive's, or its document-document cosine "
    "with a positive is >= dup_threshold (when set)",
    _near_duplicate, fields=("dup_threshold", "dup_model"), check=_check_dup,
    text=lambda cfg: "drop if same normalized text as a positive" + (
        f" or cosine >= {cfg.dup_threshold}" if cfg.dup_threshold is not None else "")))
