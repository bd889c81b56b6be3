"""A label job's unit of work: a chunk of clips decoded together (in a worker, see
:class:`~affectllm.serve.media_policy.ChunkDecoder`) and generated in one call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .engine import Engine, GenerationOptions
from .media_policy import Decoded


def label_chunk(engine: Engine, items: Sequence[Decoded], question: str | None, gen: GenerationOptions,
                questions: dict[str, str]) -> list[dict[str, Any]]:
    """Rows of one decoded chunk, in chunk order (clips asking the same question share one generate call)."""
    fingerprint = engine.fingerprint_for(question, gen)
    rows = {c.id: engine.error_row(c.id, err, fingerprint) for c, _, err in items if err is not None}
    good = [(c, d) for c, d, err in items if err is None]
    for q in dict.fromkeys(questions.get(c.id, question) for c, _ in good):
        group = [(c, d) for c, d in good if questions.get(c.id, question) == q]
        made = engine.label([c for c, _ in group], q, gen, decoded=[d for _, d in group])
        rows.update({r["id"]: r for r in made})
    return [rows[c.id] for c, _, _ in items]
