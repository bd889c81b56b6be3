"""Stage 3: confidence calibration, in two steps on top of the stage 2 model.

First GRPO trains the stated confidence (the same trainer as stage 2, :func:`affectllm.train.grpo.build_trainer`, with
the recipe's rewards, usually ``calibration`` + ``format``): for each clip the policy samples G completions; the
``calibration`` reward judges each answer correct when its emotion-wheel F1 against the gold labels reaches
``threshold`` and scores the stated confidence c with the bounded Brier form ``1[correct] - (c - 1[correct])^2`` (or,
with ``score: log``, a correctness term of weight 5 plus a clipped log score, so any right answer outscores any wrong
one); both are proper (highest in expectation when c equals the chance of being right), and a completion whose answer
or confidence cannot be read scores below every valid one. Group-relative advantages then move the confidence and leave
the answers mostly alone (the tiny recipe uses a learning rate below stage 2's). ``trainer.max_steps: 0`` skips this
step. Then, without gradients, greedy completions on a held-out split (``calibrate.posthoc_split``, never the
evaluation split) give (stated confidence, correct) pairs, and a monotone map from stated to observed confidence is
fitted on them (isotonic regression, or Platt's logistic fit), saved beside the model as ``calibration.json``. The
stage ends by comparing before (``init_from``) and after (raw and with the map) on the test split: ECE, Brier and
AUROC, ``calibration_report.json`` and reliability diagrams (``reliability.png``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..config import Recipe
from ..data.manifest import select_clips
from ..errors import UserError
from ..evaluation.evidence import Evidence
from ..evaluation.posthoc import ConfidenceMap
from ..evaluation.report import reliability_plot
from ..evaluation.runner import Correctness, calibration_metrics, confidence_pairs, predict, score
from ..inputs.store import ClipStore
from .grpo import build_trainer
from .stage import load_for_inference, run_stage

log = logging.getLogger("affectllm.train")


def _completions(path: str | Path, clips: list, recipe: Recipe, evidence: Evidence | None = None) -> tuple[list, Any]:
    """Greedy predictions of the model at ``path`` on ``clips``, and with ``evidence`` each answer's evidence
    (:meth:`Evidence.probability`; else None)."""
    from ..data.prompts import QUESTIONS

    model, processor = load_for_inference(path, recipe)
    store = ClipStore(recipe.data.feature_cache, num_frames=recipe.data.num_frames)
    preds = predict(
        model, processor, clips, store, question=QUESTIONS[recipe.task], max_new_tokens=recipe.eval.max_new_tokens
    )
    if evidence is None:
        return preds, None
    judge = Correctness.from_recipe(recipe)
    post = evidence.posteriors(model, processor, store, clips)
    return preds, [evidence.probability(p.labels, lp, judge) for p, lp in zip(preds, post, strict=True)]


def fit_evidence(recipe: Recipe, out: Path) -> Evidence:
    """The evidence model of the stage's model (its towers' readouts, the words tower's among them, or without a
    words tower a transcript readout fitted on the training split, ``data.split``), saved as ``evidence.json``
    beside it."""
    from ..model.configuration import AffectLlmConfig

    train = select_clips(recipe.data.manifest, recipe.data.split, None, recipe.seed)
    try:
        evidence = Evidence.fit(AffectLlmConfig.from_pretrained(out), train)
    except ValueError as err:
        raise UserError(f"calibrate.posthoc_input=evidence: {err}") from None
    evidence.save(out)
    return evidence


def main(recipe: Recipe) -> dict[str, Any]:
    """Run stage 3 top to bottom (the shared stage body, then :func:`posthoc_and_compare`); return the report."""
    if not recipe.init_from:
        raise UserError("the calibration stage needs init_from (the GRPO or SFT output directory)")
    return run_stage(recipe, build_trainer, finish=posthoc_and_compare)


def posthoc_and_compare(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Fit the post-hoc map on ``calibrate.posthoc_split`` (unless ``posthoc: none``), then :func:`compare`.

    The report's ``posthoc_fit`` holds ECE/Brier/AUROC on the fitting split before and after the map (the map must
    not make them worse there).
    """
    opts = recipe.calibrate
    if opts.posthoc == "none":
        return compare(recipe, out, None)
    held = select_clips(recipe.data.manifest, opts.posthoc_split, opts.posthoc_samples, recipe.seed)
    evidence = fit_evidence(recipe, out) if opts.posthoc_input == "evidence" else None
    preds, values = _completions(out, held, recipe, evidence)
    judge = Correctness.from_recipe(recipe)
    stated = confidence_pairs(preds, held, judge)
    conf, correct = confidence_pairs(preds, held, judge, evidence=values) if values is not None else stated
    method = opts.posthoc
    if method == "platt" and len(set(correct)) < 2:  # Platt needs both outcomes; isotonic maps to the one seen
        log.warning("every %s answer was %s: isotonic map instead of Platt", opts.posthoc_split,
                    "right" if correct and correct[0] else "wrong")
        method = "isotonic"
    conf_map = ConfidenceMap.fit(conf, correct, method, source=opts.posthoc_input)
    conf_map.save(out)
    log.info(
        "post-hoc %s map of the %s confidence fitted on %d %s clips -> %s",
        method,
        opts.posthoc_input,
        len(conf),
        opts.posthoc_split,
        out / "calibration.json",
    )
    fit = {
        "split": opts.posthoc_split,
        "n": len(conf),
        "input": opts.posthoc_input,
        "stated": calibration_metrics(*stated),
        "raw": calibration_metrics(conf, correct),
        "mapped": calibration_metrics([conf_map.apply(c) for c in conf], correct),
    }
    return compare(recipe, out, conf_map, posthoc_fit=fit, evidence=evidence)


def compare(
    recipe: Recipe, out: Path, conf_map: ConfidenceMap | None, posthoc_fit: dict[str, Any] | None = None,
    evidence: Evidence | None = None,
) -> dict[str, Any]:
    """Before (init_from) vs after (this stage, raw and post-hoc) on the test split; print, save (with
    ``posthoc_fit`` when given), plot. A map that reads the evidence maps ``evidence``'s value of each answer."""
    try:
        test = select_clips(
            recipe.data.eval_manifest or recipe.data.manifest, recipe.eval.split, recipe.eval.samples, recipe.seed
        )
    except ValueError as err:
        log.info("no before/after comparison: %s", err)
        return {}
    judge = Correctness.from_recipe(recipe)  # the calibration reward's taxonomy, level and threshold
    before_text, _ = _completions(recipe.init_from, test, recipe)
    after_text, values = _completions(out, test, recipe, evidence if conf_map is not None else None)
    curves = {"before": confidence_pairs(before_text, test, judge), "after": confidence_pairs(after_text, test, judge)}
    if conf_map is not None:
        curves["after + post-hoc"] = confidence_pairs(after_text, test, judge, conf_map, values)
    report = {
        "before": score(before_text, test, judge),
        "after": score(after_text, test, judge, conf_map, values),
        "calibration": {k: calibration_metrics(*v) for k, v in curves.items()},
        **({"posthoc_fit": posthoc_fit} if posthoc_fit else {}),
    }
    (out / "calibration_report.json").write_text(json.dumps(report, indent=2))
    reliability_plot(curves, out / "reliability.png")
    for name, m in report["calibration"].items():
        shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())
        print(f"[calibrate] {recipe.eval.split} split, {name}: {shown}")
    return report
