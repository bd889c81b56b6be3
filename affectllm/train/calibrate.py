"""Stage 3: confidence calibration.

Two complementary steps, both optional through the recipe:

1. GRPO with the ``calibration`` reward (correctness by EW against gold, the stated confidence scored by the
   bounded Brier form, or the clipped log score; a format failure scores below every valid answer) — the same
   trainer as stage 2, with the recipe's rewards (``trainer.max_steps: 0`` skips it);
2. post-hoc: a monotone map (isotonic or Platt) from stated to observed confidence, fitted on a held-out split
   (``calibrate.posthoc_split``) and saved with the model as ``calibration.json``; inference applies it.

The stage ends by comparing before (``init_from``) and after on the test split: ECE, Brier, AUROC, with
reliability diagrams (``reliability.png``) and ``calibration_report.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..config import Recipe
from ..data.manifest import select_clips
from ..evaluation.posthoc import ConfidenceMap
from ..evaluation.report import reliability_plot
from ..evaluation.runner import calibration_metrics, confidence_pairs, generate_completions, score
from ..inputs.store import ClipStore
from .grpo import build_trainer
from .stage import load_for_inference, load_stage_model, save_final, setup_output, train_and_save

log = logging.getLogger("affectllm.train")


def _completions(path: str | Path, clips: list, recipe: Recipe) -> list[str]:
    from ..data.prompts import QUESTIONS

    model, processor = load_for_inference(path, recipe)
    store = ClipStore(recipe.data.feature_cache, num_frames=recipe.data.num_frames)
    return generate_completions(model, processor, clips, store,
                                question=QUESTIONS[recipe.task],
                                max_new_tokens=recipe.eval.max_new_tokens)


def main(recipe: Recipe) -> dict[str, Any]:
    """Run stage 3 top to bottom; return the before/after report."""
    out = setup_output(recipe)
    opts = recipe.calibrate
    if not recipe.init_from:
        raise ValueError("the calibration stage needs init_from (the GRPO or SFT output directory)")
    if int(recipe.trainer.get("max_steps", -1)) != 0:  # -1 means "train by num_train_epochs", 0 skips GRPO
        model, processor = load_stage_model(recipe)
        trainer = build_trainer(recipe, model, processor, out)
        if not train_and_save(trainer, processor, recipe, out):
            return {}
    else:
        model, processor = load_for_inference(recipe.init_from, recipe)
        save_final(model, processor, out)
    conf_map = None
    if opts.posthoc != "none":
        held = select_clips(recipe.data.manifest, opts.posthoc_split, opts.posthoc_samples, recipe.seed)
        conf, correct = confidence_pairs(_completions(out, held, recipe), held)
        conf_map = ConfidenceMap.fit(conf, correct, opts.posthoc)
        conf_map.save(out)
        log.info("post-hoc %s map fitted on %d %s clips -> %s", opts.posthoc, len(conf), opts.posthoc_split,
                 out / "calibration.json")
    return compare(recipe, out, conf_map)


def compare(recipe: Recipe, out: Path, conf_map: ConfidenceMap | None) -> dict[str, Any]:
    """Before (init_from) vs after (this stage, raw and post-hoc) on the test split; print, save, plot."""
    try:
        test = select_clips(recipe.data.eval_manifest or recipe.data.manifest, recipe.eval.split,
                            recipe.eval.samples, recipe.seed)
    except ValueError as err:
        log.info("no before/after comparison: %s", err)
        return {}
    before_text = _completions(recipe.init_from, test, recipe)
    after_text = _completions(out, test, recipe)
    curves = {"before": confidence_pairs(before_text, test), "after": confidence_pairs(after_text, test)}
    if conf_map is not None:
        curves["after + post-hoc"] = confidence_pairs(after_text, test, conf_map=conf_map)
    report = {"before": score(before_text, test), "after": score(after_text, test, conf_map=conf_map),
              "calibration": {k: calibration_metrics(*v) for k, v in curves.items()}}
    (out / "calibration_report.json").write_text(json.dumps(report, indent=2))
    reliability_plot(curves, out / "reliability.png")
    for name, m in report["calibration"].items():
        shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())
        print(f"[calibrate] {recipe.eval.split} split, {name}: {shown}")
    return report
