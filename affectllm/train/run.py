"""``affectllm train RECIPE [key=value ...]``: load the recipe, run the stage it names, print its evaluation."""

from __future__ import annotations

import logging
import os
from typing import Any

from ..config import load_recipe
from . import calibrate, grpo, sft

STAGES = {"sft": sft.main, "grpo": grpo.main, "calibrate": calibrate.main}


def is_main_process() -> bool:
    """True on rank 0 (or when not distributed)."""
    return int(os.environ.get("RANK", "0")) == 0


def _logging() -> None:
    from rich.logging import RichHandler

    level = logging.INFO if is_main_process() else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(show_path=False)], force=True)


def run_stage(recipe: Any) -> dict[str, Any]:
    """Run the stage the recipe names (its ``main``) and return its evaluation."""
    return STAGES[recipe.stage](recipe)


def train_main(recipe_path: str, overrides: list[str] | None = None) -> int:
    """Entry point of ``affectllm train``: returns 0 on success (errors propagate as clear messages)."""
    _logging()
    recipe = load_recipe(recipe_path, overrides)
    # every rank says it started: a launcher that silently runs one process shows up here
    print(f"[affectllm] stage {recipe.stage} -> {recipe.output_dir} (rank {os.environ.get('RANK', '0')}, "
          f"world_size={os.environ.get('WORLD_SIZE', '1')})", flush=True)
    try:
        run_stage(recipe)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0
