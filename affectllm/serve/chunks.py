"""A label job's unit of work: a chunk of clips decoded together (in a worker) and generated in one call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..media.decode import MediaError
from ..types import Clip, DecodedClip
from .engine import Engine, GenerationOptions
from .media_policy import MediaPolicy

Decoded = tuple[Clip, DecodedClip | None, str | None]


class ChunkDecoder(torch.utils.data.Dataset):
    """Item ``k`` = chunk ``k`` decoded: ``[(clip, decoded or None, error or None), ...]`` (runs in a worker)."""

    def __init__(self, chunks: list[list[Clip]], media: MediaPolicy) -> None:
        self.chunks = chunks
        self.media = media

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> list[Decoded]:
        out: list[Decoded] = []
        for clip in self.chunks[k]:
            try:
                out.append((clip, self.media.decode(clip), None))
            except Exception as err:  # noqa: BLE001 - a bad clip is its row's error, the job goes on
                why = str(err) if isinstance(err, MediaError) else \
                    f"{type(err).__name__}: {err} (while decoding {clip.video or clip.audio})"
                out.append((clip, None, why))
        return out


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
