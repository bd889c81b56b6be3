"""``affectllm train RECIPE [key=value ...]``: load the recipe, run the stage it names, print its evaluation."""

from __future__ import annotations

import logging
from typing import Any

from ..config import Recipe, load_recipe
from . import calibrate, encoders, grpo, sft

STAGES = {"encoders": encoders.main, "sft": sft.main, "grpo": grpo.main, "calibrate": calibrate.main}


def _logging(main_process: bool) -> None:
    from rich.logging import RichHandler

    level = logging.INFO if main_process else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(show_path=False)], force=True)


def run_recipe(recipe: Recipe) -> dict[str, Any]:
    """Run the stage the recipe names (its ``main``) and return its evaluation ({} off the main process)."""
    return STAGES[recipe.stage](recipe)


def train_main(recipe_path: str, overrides: list[str] | None = None) -> int:
    """Entry point of ``affectllm train``: returns 0 on success (errors propagate as clear messages)."""
    from accelerate import PartialState

    recipe = load_recipe(recipe_path, overrides)
    state = PartialState()  # joins the launcher's process group (torchrun, accelerate) or runs alone
    _logging(state.is_main_process)
    # every rank says it started: a launcher that silently runs one process shows up here
    print(
        f"[affectllm] stage {recipe.stage} -> {recipe.output_dir} (rank {state.process_index}, "
        f"world_size={state.num_processes})",
        flush=True,
    )
    try:
        run_recipe(recipe)
    except BaseException:
        _leave_process_group(together=False)  # a failed rank must not wait for peers that may never come
        raise
    _leave_process_group(together=True)
    return 0


def _leave_process_group(together: bool) -> None:
    """Destroy the launcher's process group, after a barrier when ``together``.

    Rank 0 still writes and plots after the other ranks have passed the stage's last barrier; a rank that tore its
    connections down and exited during that window once aborted at exit in CI ("terminate called without an active
    exception", SIGABRT), failing a job whose model was already saved. Leaving together closes the window.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if together:
        dist.barrier()
    dist.destroy_process_group()
