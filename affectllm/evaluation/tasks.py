"""Evaluation tasks: YAML files (``eval/tasks/*.yaml``) plus small named hooks in :data:`affectllm.registry.TASKS`.

A task names its data (a manifest, or an importer of :mod:`affectllm.data.sources` with its release folder and
options), the split, the question asked, how the answer is read, the gold mapping of the published protocol, the
metrics (names below, each computed by :mod:`affectllm.metrics`) and the bootstrap. The schema is the dataclass
:class:`TaskSpec`; OmegaConf loads it, so ``${oc.env:VAR,default}`` reads an environment variable and a misspelt
key fails with the file and the key. Hooks (lm-eval-harness style ``process_docs`` / ``process_results``):

* ``gold`` hooks, ``(clip, task) -> Clip | None``: rewrite a clip's gold or drop it from the task (None);
* a ``prediction`` hook, ``(labels, task, taxonomy) -> str``: the class a list of predicted labels stands for;
* a ``references`` hook, ``(clips, task) -> {system: [(labels, aus), ...]}``: reference systems on the same clips.

A hook is a registered name or ``"package.module:function"`` (see :class:`affectllm.registry.Registry`).
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..data.prompts import QUESTIONS
from ..metrics import ew_scores, selective_curve
from ..registry import METRICS, TASKS
from ..taxonomy import Taxonomy
from ..types import Clip

TASK_DIR = Path(__file__).resolve().parents[2] / "eval" / "tasks"
PARSE_MODES = ("completion", "answer_list")
OTHER = "other"
"""The class of a prediction that names none of the task's classes (a wrong answer in accuracy/UAR/WAR/F1)."""


class TaskError(ValueError):
    """A task file that cannot be used; the message names the file and the key."""


@dataclass
class DatasetSpec:
    """Where the clips come from: ``manifest`` or ``importer`` + ``root`` (+ loader ``options``)."""

    manifest: str | None = None
    importer: str | None = None
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaxonomySpec:
    """The emotion wheels: the built-in taxonomy, or the MER tables read from ``wheel_dir``."""

    wheel_dir: str | None = None
    table: str = "mer2026"


@dataclass
class BootstrapSpec:
    """Percentile bootstrap of every metric: ``resamples`` draws seeded by ``seed``, ``confidence`` mass."""

    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0


@dataclass
class TaskSpec:
    """One evaluation task (the YAML schema; see ``eval/README.md``)."""

    task: str = ""
    description: str = ""
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    split: str | None = "test"
    question: str | None = None
    parse: str = "completion"
    max_new_tokens: int = 128
    max_samples: int | None = None
    sample_seed: int = 0
    gold: list[str] = field(default_factory=list)
    label_map: dict[str, str] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    prediction: str | None = None
    metrics: list[str] = field(default_factory=list)
    breakdown: list[str] = field(default_factory=list)
    references: str | None = None
    correct_threshold: float = 0.5
    taxonomy: TaxonomySpec = field(default_factory=TaxonomySpec)
    bootstrap: BootstrapSpec = field(default_factory=BootstrapSpec)
    source: str = ""

    @property
    def question_text(self) -> str | None:
        """The question asked: a key of :data:`affectllm.data.prompts.QUESTIONS` or the text itself; None asks the
        question the model was trained with (its recipe's task)."""
        return QUESTIONS.get(self.question, self.question) if self.question else None


def task_path(name_or_path: str) -> Path:
    """The YAML file of a task given by path or by name (``eval/tasks/<name>.yaml``).

    Raises:
        TaskError: neither a file nor a shipped task name; the message lists the shipped names.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise TaskError(f"{path}: no such task file")
        return path
    shipped = TASK_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(shipped_tasks()) or "(none)"
    raise TaskError(f"unknown task {name_or_path!r}: not a file and not in {TASK_DIR}; shipped: {known}")


def shipped_tasks() -> list[str]:
    """Names of the tasks in ``eval/tasks/``."""
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml")) if TASK_DIR.is_dir() else []


def _schema_error(source: str, err: OmegaConfBaseException) -> TaskError:
    key = str(getattr(err, "full_key", "") or "")
    message = str(err).splitlines()[0]
    leaf = key.rsplit(".", 1)[-1]
    known = [f.name for f in fields(TaskSpec)]
    for part in key.split(".")[:-1]:  # nested sections: suggest among that section's keys
        known = [f.name for f in fields({"dataset": DatasetSpec, "taxonomy": TaxonomySpec,
                                         "bootstrap": BootstrapSpec}.get(part, TaskSpec))]
    close = difflib.get_close_matches(leaf, known, n=1) if "not in" in message else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return TaskError(f"{source}: key {key!r}: {message}{hint}")


def load_task(name_or_path: str) -> TaskSpec:
    """Load and validate one task (a shipped name or a YAML path).

    Raises:
        TaskError: unknown name, unreadable YAML, unknown key or wrong type (file and dotted key named), or a
            value that cannot work (unknown hook, metric or parse mode, no metric, no data source).
    """
    path = task_path(name_or_path)
    source = str(path)
    try:
        raw = OmegaConf.load(path)
        merged = OmegaConf.merge(OmegaConf.structured(TaskSpec), raw)
        OmegaConf.resolve(merged)
        spec = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise _schema_error(source, err) from err
    except (OSError, ValueError) as err:
        raise TaskError(f"{source}: cannot read the task: {err}") from err
    assert isinstance(spec, TaskSpec)
    spec = replace(spec, task=spec.task or path.stem, source=source)
    validate(spec)
    return spec


def validate(spec: TaskSpec) -> None:
    """Check the values a schema cannot (hooks, metrics, data source); raise :class:`TaskError` naming the key."""
    where = spec.source or spec.task

    def fail(key: str, message: str) -> None:
        raise TaskError(f"{where}: key {key!r}: {message}")

    ds = spec.dataset
    if bool(ds.manifest) == bool(ds.importer):
        fail("dataset", "give exactly one of dataset.manifest or dataset.importer (+ dataset.root)")
    if ds.importer:
        _check_importer(ds, fail)
    b = spec.bootstrap
    if b.resamples < 1 or not 0.0 < b.confidence < 1.0:
        fail("bootstrap", f"resamples must be >= 1 and confidence in (0, 1), got {b.resamples}, {b.confidence}")
    if not 0.0 <= spec.correct_threshold <= 1.0:
        fail("correct_threshold", f"must lie in [0, 1], got {spec.correct_threshold}")
    if spec.max_samples is not None and spec.max_samples < 1:
        fail("max_samples", f"must be >= 1 (or null for all), got {spec.max_samples}")
    if spec.parse not in PARSE_MODES:
        fail("parse", f"{spec.parse!r} is not one of {', '.join(PARSE_MODES)}")
    if not spec.metrics:
        fail("metrics", "list at least one metric")
    for i, name in enumerate(spec.metrics):
        try:
            scorer(name)
        except KeyError:
            close = difflib.get_close_matches(name, list(SCORERS), n=1)
            fail(f"metrics[{i}]", f"unknown metric {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                 + f"; known: {', '.join(SCORERS)} (and selective_accuracy@C)")
    hooks = [(f"gold[{i}]", h) for i, h in enumerate(spec.gold)]
    hooks += [("prediction", spec.prediction), ("references", spec.references)]
    for key, hook in hooks:
        if hook is not None:
            try:
                TASKS.get(hook)
            except KeyError as err:
                fail(key, str(err.args[0]))
    for i, name in enumerate(spec.breakdown):
        if name not in BREAKDOWNS:
            fail(f"breakdown[{i}]", f"unknown breakdown {name!r}; known: {', '.join(BREAKDOWNS)}")
    class_metrics = [m for m in spec.metrics if m in ("accuracy", "uar", "war", "weighted_f1")]
    if class_metrics and not spec.classes:
        fail("classes", f"{', '.join(class_metrics)} need the task's classes")


def _check_importer(ds: DatasetSpec, fail: Callable[[str, str], None]) -> None:
    """The importer exists, has a release folder, and takes the options given (its signature names them)."""
    import inspect

    from ..data.sources import DATASETS

    if not ds.root:
        fail("dataset.root", f"importer {ds.importer!r} needs the release folder (dataset.root)")
    try:
        loader = DATASETS.get(ds.importer)
    except KeyError as err:
        fail("dataset.importer", str(err.args[0]))
    params = list(inspect.signature(loader).parameters)[1:]  # the first one is root
    for key in ds.options:
        if key not in params:
            fail(f"dataset.options.{key}", f"{ds.importer} has no such option (options: {', '.join(params)})")


# --- gold ---------------------------------------------------------------------------------------------------


def map_gold(clip: Clip, spec: TaskSpec) -> Clip | None:
    """Apply ``label_map`` to the clip's gold labels and emotion; with ``classes``, drop a clip outside them."""
    table = {k.lower(): v for k, v in spec.label_map.items()}
    emotion = table.get(clip.emotion.lower(), clip.emotion) if clip.emotion else None
    labels = list(dict.fromkeys(table.get(x.lower(), x) for x in clip.labels)) if clip.labels else clip.labels
    if spec.classes and emotion not in spec.classes:
        return None
    return replace(clip, emotion=emotion, labels=labels)


def prepare_gold(clips: Sequence[Clip], spec: TaskSpec) -> list[Clip]:
    """The task's clips with gold mapped: the ``gold`` hooks in order, then ``label_map`` / ``classes``."""
    out = []
    for clip in clips:
        current: Clip | None = clip
        for name in spec.gold:
            current = TASKS.get(name)(current, spec) if current is not None else None
        if current is not None and (spec.label_map or spec.classes):
            current = map_gold(current, spec)
        if current is not None:
            out.append(current)
    return out


@TASKS.register("sentiment_from_valence")
def sentiment_from_valence(clip: Clip, spec: TaskSpec) -> Clip | None:
    """Binary sentiment gold from the sign of ``valence``; a clip with valence 0 or none is dropped (Acc-2 as
    MER-UniBench and MMSA score it: non-zero gold only)."""
    if clip.valence is None or clip.valence == 0:
        return None
    polarity = "positive" if clip.valence > 0 else "negative"
    return replace(clip, emotion=polarity, labels=[polarity])


# --- predictions ----------------------------------------------------------------------------------------------


@TASKS.register("first_matching_class")
def first_matching_class(labels: Sequence[str], spec: TaskSpec, taxonomy: Taxonomy) -> str:
    """The class of the first predicted label that names one: the word itself (through ``label_map``), else its
    emotion-wheel cluster (the first class in ``classes`` order with that cluster); :data:`OTHER` when none."""
    table = {k.lower(): v for k, v in spec.label_map.items()}
    clusters: dict[str, str] = {}
    for c in spec.classes:
        key = taxonomy.normalize(c)
        if key is not None:
            clusters.setdefault(key, c)
    for label in labels:
        word = table.get(label.lower(), label.lower())
        if word in spec.classes:
            return word
        key = taxonomy.normalize(word)
        if key in clusters:
            return clusters[key]
    return OTHER


NEGATIVE_CLUSTERS = frozenset({"sadness", "anger", "fear", "disgust", "contempt"})


@TASKS.register("sentiment_from_labels")
def sentiment_from_labels(labels: Sequence[str], spec: TaskSpec, taxonomy: Taxonomy) -> str:
    """``positive`` when more predicted labels fall in the happiness cluster (or say "positive") than in a negative
    one (sadness, anger, fear, disgust, contempt, or "negative"), else ``negative``: neutral and surprise count as
    non-positive, as MER-UniBench's ``pred > 0``. (MER-UniBench maps labels to sentiment with an LLM; this is a
    deterministic stand-in on the built-in wheel.)"""
    votes = Counter()
    for label in labels:
        word = label.lower()
        cluster = word if word in ("positive", "negative") else taxonomy.normalize(word)
        if cluster in ("positive", "happiness"):
            votes["positive"] += 1
        elif cluster == "negative" or cluster in NEGATIVE_CLUSTERS:
            votes["negative"] += 1
    return "positive" if votes["positive"] > votes["negative"] else "negative"


# --- reference systems ----------------------------------------------------------------------------------------

EMOWORLD_SUMMARY = "emoworld.json"


@TASKS.register("emoworld")
def emoworld_references(clips: Sequence[Clip], spec: TaskSpec) -> dict[str, list[tuple[list[str], list[str]]]]:
    """EmoWorld's oracle (all cues, and each modality alone) and baselines on the task's clips.

    The latent state of each clip is re-drawn from the manifest's ``emoworld.json`` (seed, n, knobs), exactly as
    ``data synth`` drew it; the baselines are fitted on that world's train split.

    Raises:
        TaskError: no ``emoworld.json`` next to the manifest, or a clip id that world does not have.
    """
    from ..emoworld.generate import SYSTEMS, simulate
    from ..emoworld.oracle import Baselines, Oracle
    from ..emoworld.world import Knobs

    if not spec.dataset.manifest:
        raise TaskError(f"{spec.source}: key 'references': the emoworld references need dataset.manifest")
    summary_path = Path(spec.dataset.manifest).parent / EMOWORLD_SUMMARY
    if not summary_path.is_file():
        raise TaskError(f"{spec.source}: key 'references': {summary_path} not found (written by `data synth`)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    knobs = Knobs(**summary["knobs"])
    rows, latents = simulate(summary["n"], summary["seed"], knobs)
    by_id = {r["id"]: (r, lat) for r, lat in zip(rows, latents, strict=True)}
    missing = [c.id for c in clips if c.id not in by_id]
    if missing:
        raise TaskError(f"{summary_path}: clip ids {missing[:5]} are not in this EmoWorld (seed/n changed?)")
    oracle, base = Oracle(knobs), Baselines([r for r in rows if r["split"] == "train"] or rows)
    out: dict[str, list[tuple[list[str], list[str]]]] = {}
    for name, use in SYSTEMS:
        if use is not None:
            out[name] = [oracle.predict(by_id[c.id][1], use) for c in clips]
        else:
            fn = base.keyword_predict if name.startswith("keyword") else base.majority_predict
            out[name] = [fn(by_id[c.id][0]) for c in clips]
    return out


# --- breakdowns -----------------------------------------------------------------------------------------------


def modality_key(present: Sequence[str]) -> str:
    """``"video+audio+text"``-style name of the modalities a clip carries."""
    return "+".join(present) or "none"


BREAKDOWNS: dict[str, Callable[[dict[str, Any]], str]] = {"modality": lambda r: modality_key(r["present"])}
"""Per-sample grouping keys of a record (EW-F and the task's first metric are reported per group)."""


# --- metrics of per-sample records ----------------------------------------------------------------------------

Record = dict[str, Any]
"""One scored sample: ``id``, ``present``, predicted ``labels``/``aus``/``confidence``/``confidence_raw``/
``pred_class``, gold ``gold_labels``/``emotion``/``gold_aus``/``gold_class``, and ``correct`` (EW F >= threshold)."""


@dataclass(frozen=True)
class Scorer:
    """A task metric: which records it applies to, and its value on a list of them (from :mod:`affectllm.metrics`)."""

    applies: Callable[[Record], bool]
    score: Callable[[list[Record], Taxonomy], float | None]
    higher_is_better: bool


def _labels(rs: list[Record]) -> tuple[list[list[str]], list[list[str]]]:
    return [r["labels"] for r in rs], [r["gold_labels"] for r in rs]


def _ew(key: str, level: str) -> Scorer:
    return Scorer(lambda r: bool(r["gold_labels"]),
                  lambda rs, tax: ew_scores(*_labels(rs), tax, level)[key] if rs else None, True)


def _classes(name: str) -> Scorer:
    fn = METRICS.get(name)
    return Scorer(lambda r: r["gold_class"] is not None,
                  lambda rs, tax: fn([r["pred_class"] for r in rs], [r["gold_class"] for r in rs]) if rs else None,
                  fn.higher_is_better)


def _au(key: str) -> Scorer:
    fn = METRICS.get("au_f1")
    return Scorer(lambda r: bool(r["gold_aus"]),
                  lambda rs, tax: fn([r["aus"] for r in rs], [r["gold_aus"] for r in rs])[key] if rs else None, True)


def _pairs(rs: list[Record], conf_key: str) -> tuple[list[float], list[bool]]:
    # a missing confidence counts 0: a model that states none is as unsure as it can be (as evaluation.runner)
    return [r[conf_key] if r[conf_key] is not None else 0.0 for r in rs], [r["correct"] for r in rs]


def _calibration(name: str, conf_key: str) -> Scorer:
    fn = METRICS.get(name)
    return Scorer(lambda r: r["correct"] is not None, lambda rs, tax: fn(*_pairs(rs, conf_key)) if rs else None,
                  fn.higher_is_better)


def _selective_accuracy(coverage: float, conf_key: str) -> Scorer:
    def score(rs: list[Record], tax: Taxonomy) -> float | None:
        curve = selective_curve(*_pairs(rs, conf_key)) if rs else []
        return next((p["accuracy"] for p in curve if p["coverage"] >= coverage), None)

    return Scorer(lambda r: r["correct"] is not None, score, True)


SCORERS: dict[str, Scorer] = {
    "ew_level1": _ew("f", "level1"),
    "ew_level2": _ew("f", "level2"),
    "ew_precision": _ew("precision", "level1"),
    "ew_recall": _ew("recall", "level1"),
    "hit_rate": Scorer(lambda r: r["emotion"] is not None,
                       lambda rs, tax: METRICS.get("hit_rate")([r["labels"] for r in rs], [r["emotion"] for r in rs],
                                                               tax) if rs else None, True),
    **{name: _classes(name) for name in ("accuracy", "uar", "war", "weighted_f1")},
    "au_f1_macro": _au("macro"),
    "au_f1_micro": _au("micro"),
    **{f"{name}{suffix}": _calibration(name, key) for name in ("ece", "brier", "auroc", "selective_auc")
       for suffix, key in (("", "confidence"), ("_raw", "confidence_raw"))},
}
"""Metric names a task may list; ``*_raw`` read the stated confidence before the model's calibration map."""


def scorer(name: str) -> Scorer:
    """The :class:`Scorer` of a metric name (``selective_accuracy@0.5[_raw]``: accuracy on the most confident half).

    Raises:
        KeyError: unknown name.
    """
    if name in SCORERS:
        return SCORERS[name]
    head, sep, tail = name.partition("@")
    raw = tail.endswith("_raw")
    try:
        coverage = float(tail.removesuffix("_raw"))
    except ValueError:
        coverage = -1.0
    if head == "selective_accuracy" and sep and 0.0 < coverage <= 1.0:
        return _selective_accuracy(coverage, "confidence_raw" if raw else "confidence")
    raise KeyError(name)
