"""The one inference engine under chat, batch labeling, the server and the eval harness.

:meth:`Engine.load` loads a model directory once (:func:`affectllm.model.build.load_pretrained`), reads the media
policy and default question the model was trained with (its saved ``recipe.yaml``: ``data.num_frames``, ``task``) and
its post-hoc confidence map (``calibration.json``). :meth:`Engine.label` decodes clips, builds the training prompts
(:func:`affectllm.inputs.collate.build_prompt_inputs`), generates in batches (left padding, media placeholders never
generated), parses with :func:`affectllm.parsing.parse_completion` and returns label-output rows (DESIGN.md §3).
Greedy decoding by default, so the same model and clips give the same rows; sampling when asked, seeded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.prompts import QUESTIONS, SYSTEM_PROMPT, messages, user_content
from ..evaluation.evidence import Evidence
from ..evaluation.posthoc import ConfidenceMap
from ..inputs.collate import build_prompt_inputs, media_kwargs, present_modalities
from ..media.decode import MediaError
from ..model.generation import generate_prefill_once
from ..parsing import parse_completion
from ..types import Clip, DecodedClip
from .media_policy import MediaPolicy, faces_available

DEFAULT_NUM_FRAMES = 8
DEFAULT_TASK = "describe"
# Files whose content defines what the model writes (weights are hashed by size and sampled bytes, see _file_digest).
MODEL_FILES = ("config.json", "generation_config.json", "calibration.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "processor_config.json", "preprocessor_config.json", "chat_template.jinja")
SAMPLE_BYTES = 1 << 20


@dataclass
class GenerationOptions:
    """Decoding settings (part of the fingerprint).

    Attributes:
        max_new_tokens: longest completion.
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature (sampling only).
        top_p: nucleus mass (sampling only).
        seed: seeds torch before each generate call (reproducible sampling for one batch composition).
        n: completions per clip; the row is the first, the others go to its ``samples`` list.
        stop: strings that end a completion early.
    """

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    n: int = 1
    stop: list[str] | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError(f"max_new_tokens ({self.max_new_tokens}) and n ({self.n}) must be at least 1")
        if self.n > 1 and not self.do_sample:
            raise ValueError(f"n={self.n} completions per clip need do_sample=True (greedy gives one)")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature ({self.temperature}) must be > 0 and top_p ({self.top_p}) in (0, 1]")

    def generate_kwargs(self, tokenizer: Any) -> dict[str, Any]:
        """Keyword arguments of ``model.generate`` (sampling knobs only when sampling: greedy ignores them)."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                                  "num_return_sequences": self.n}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        if self.stop:
            kwargs.update(stop_strings=list(self.stop), tokenizer=tokenizer)
        return kwargs


def _file_digest(path: Path) -> str:
    """sha256 of a small file; of size + first and last MiB for a large one (weights: a retrain changes both)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size <= 2 * SAMPLE_BYTES:
            h.update(fh.read())
        else:
            h.update(str(size).encode())
            h.update(fh.read(SAMPLE_BYTES))
            fh.seek(size - SAMPLE_BYTES)
            h.update(fh.read())
    return h.hexdigest()


def model_digest(model_dir: Path) -> dict[str, str]:
    """Digest of every file of ``model_dir`` that defines its outputs (configs, tokenizer, weights, calibration)."""
    names = sorted(p.name for p in model_dir.iterdir() if p.is_file()
                   and (p.name in MODEL_FILES or p.suffix in (".safetensors", ".bin")))
    return {name: _file_digest(model_dir / name) for name in names}


def _saved_recipe(model_dir: Path) -> tuple[int, str]:
    """``(data.num_frames, task)`` of the recipe saved with a trained model; defaults without one."""
    path = model_dir / "recipe.yaml"
    if not path.is_file():
        return DEFAULT_NUM_FRAMES, DEFAULT_TASK
    from ..config import load_recipe

    recipe = load_recipe(path, check_trainer=False)
    return recipe.data.num_frames, recipe.task


def _saved_judge(model_dir: Path) -> Any:
    """How the saved recipe's calibration reward judges an answer right (its defaults without a recipe)."""
    from ..evaluation.runner import Correctness

    path = model_dir / "recipe.yaml"
    if not path.is_file():
        return Correctness()
    from ..config import load_recipe

    return Correctness.from_recipe(load_recipe(path, check_trainer=False))


@dataclass
class ModelSettings:
    """How a model folder is used, read without loading its weights (a label job starts its decode workers with
    it while the model loads).

    Attributes:
        model_dir: the folder.
        task: the training task whose question is the default (saved recipe's ``task``, else ``describe``).
        media: how its clips are decoded.
        modalities: the modalities the model takes.
        digest: :func:`model_digest` of the folder.
    """

    model_dir: Path
    task: str
    media: MediaPolicy
    modalities: list[str]
    digest: dict[str, str]

    @classmethod
    def read(cls, model_dir: str | Path, num_frames: int | None = None) -> ModelSettings:
        """Read a model folder's config, saved recipe and files (``num_frames`` overrides the recipe's).

        Raises:
            FileNotFoundError: ``model_dir`` is not a model directory.
        """
        from transformers import AutoConfig

        from .. import model as _registers_the_auto_classes  # noqa: F401

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: not an affectllm model directory (no config.json); point --model "
                                    "at a training stage's output_dir or a folder written by `affectllm model init`")
        modalities = AutoConfig.from_pretrained(model_dir).enabled_modalities()
        saved_frames, task = _saved_recipe(model_dir)
        faces = bool({"face", "au"} & set(modalities)) and faces_available()
        return cls(model_dir, task, MediaPolicy(num_frames=num_frames or saved_frames, faces=faces), modalities,
                   model_digest(model_dir))

    def question(self, question: str | None = None) -> str:
        """The question asked: ``question``, else the training question of the model's task."""
        return question or QUESTIONS[self.task]

    def fingerprint(self, question: str | None = None, gen: GenerationOptions | None = None) -> str:
        """Hash of what decides a row: model files (chat template and tokenizer included), system prompt and
        question, decoding options, media policy and modalities."""
        parts = {"model": self.digest, "system": SYSTEM_PROMPT, "question": self.question(question),
                 "generation": asdict(gen or GenerationOptions()), "media": self.media.describe(),
                 "modalities": self.modalities}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class _Decoded:
    """The store :func:`build_prompt_inputs` reads, over clips already decoded (``get(clip)`` by id)."""

    def __init__(self, decoded: Sequence[DecodedClip]) -> None:
        self._by_id = {d.id: d for d in decoded}

    def get(self, clip: Clip) -> DecodedClip:
        return self._by_id[clip.id]

    def features(self, clip_id: str) -> dict[str, Any]:
        """No cached encoder features: the towers run on the decoded media."""
        return {}


class Engine:
    """A loaded model with its processor, media policy, default question and confidence map.

    Attributes:
        model: the model (eval mode, on its device).
        processor: its processor.
        model_dir: the directory it was loaded from.
        model_name: a short name for rows (the directory's name).
        media: how clips are decoded for it.
        task: the training task whose question is the default.
        conf_map: the post-hoc confidence map, or None.
        evidence: the evidence model the map reads (``evidence.json``; None when it maps the stated number).
        judge: how an answer is judged right (the saved recipe's calibration reward), for the evidence.
        batch_size: clips per generate call in :meth:`label`.
        fingerprint: hash of model files, prompt, default decoding and frame policy (label resume checks it).
    """

    def __init__(self, model: Any, processor: Any, model_dir: str | Path, media: MediaPolicy,
                 task: str = DEFAULT_TASK, conf_map: ConfidenceMap | None = None, batch_size: int = 8,
                 evidence: Evidence | None = None, judge: Any = None) -> None:
        self.model = model
        self.processor = processor
        self.model_dir = Path(model_dir)
        self.model_name = self.model_dir.resolve().name
        self.media = media
        self.task = task
        if conf_map is not None and conf_map.reads_evidence and evidence is None:
            raise FileNotFoundError(f"{model_dir}: its calibration.json maps the answers' evidence but evidence.json "
                                    "is missing: copy it with the model, or rerun the calibration stage")
        self.conf_map = conf_map
        self.evidence = evidence if conf_map is not None and conf_map.reads_evidence else None
        self.judge = judge
        self.batch_size = batch_size
        self.modalities = model.config.enabled_modalities()
        self.settings = ModelSettings(self.model_dir, task, media, self.modalities, model_digest(self.model_dir))
        self.fingerprint = self.fingerprint_for()

    @classmethod
    def load(cls, model_dir: str | Path, *, dtype: str | torch.dtype | None = None,
             attn_implementation: str | None = None, device: str | None = None,
             num_frames: int | None = None) -> Engine:
        """Load a saved model directory once (see the module docs).

        Args:
            model_dir: a training stage's ``output_dir`` or an ``affectllm model init`` folder.
            dtype: weights' dtype (default: the saved config's).
            attn_implementation: attention kernel (default: the saved config's).
            device: ``"cpu"``, ``"cuda:1"``...; None puts the model on the GPU when there is one.
            num_frames: frames per clip (default: the saved recipe's ``data.num_frames``, else 8).

        Raises:
            FileNotFoundError: ``model_dir`` is not a model directory.
        """
        from ..model.build import load_pretrained

        settings = ModelSettings.read(model_dir, num_frames)
        model, processor = load_pretrained(settings.model_dir, dtype, attn_implementation, device)
        conf_map = ConfidenceMap.load(settings.model_dir)
        evidence = judge = None
        if conf_map is not None and conf_map.reads_evidence:
            evidence, judge = Evidence.load(settings.model_dir), _saved_judge(settings.model_dir)
        return cls(model, processor, settings.model_dir, settings.media, task=settings.task, conf_map=conf_map,
                   evidence=evidence, judge=judge)

    def question(self, question: str | None = None) -> str:
        """The question asked: ``question``, else the training question of the model's task."""
        return self.settings.question(question)

    def fingerprint_for(self, question: str | None = None, gen: GenerationOptions | None = None) -> str:
        """:meth:`ModelSettings.fingerprint` of this model."""
        return self.settings.fingerprint(question, gen)

    def decode(self, clip: Clip) -> DecodedClip:
        """Decode a clip with the model's media policy (may raise :class:`~affectllm.media.decode.MediaError`)."""
        return self.media.decode(clip)

    def error_row(self, clip_id: str, error: str, fingerprint: str | None = None) -> dict[str, Any]:
        """The label-output row of a clip that could not be labeled."""
        return {"id": clip_id, "labels": [], "confidence": None, "confidence_raw": None, "explanation": "",
                "aus": [], "raw": "", "error": error, "model": self.model_name,
                "fingerprint": fingerprint or self.fingerprint}

    def posteriors(self, clips: Sequence[Clip], decoded: Sequence[DecodedClip] | None = None) -> list[Any] | None:
        """The clips' emotion log-posteriors from the towers' readouts (and the transcript readout of a model without a
        words tower), which the evidence confidence needs (:class:`~affectllm.evaluation.evidence.Evidence`);
        None when the confidence map reads the stated number. ``decoded``: the clips already decoded (else
        decoded here)."""
        if self.evidence is None:
            return None
        found = list(decoded) if decoded is not None else [self.decode(c) for c in clips]
        return list(self.evidence.posteriors(self.model, self.processor, _Decoded(found), clips))

    def row(self, clip_id: str, texts: Sequence[str], fingerprint: str, posterior: Any = None) -> dict[str, Any]:
        """The label-output row of one clip from its completion(s) (``samples`` holds the others when n > 1).

        ``confidence`` is the calibrated one: the map of the stated number, or, when the map reads the evidence,
        of the answer's evidence under ``posterior`` (from :meth:`posteriors`; without it, None);
        ``confidence_raw`` is the number the LLM wrote."""
        pred = parse_completion(texts[0])
        if self.conf_map is None:
            conf = pred.confidence
        elif self.evidence is not None:
            conf = None if posterior is None else self.conf_map.apply(
                self.evidence.probability(pred.labels, posterior, self.judge))
        else:
            conf = self.conf_map.apply(pred.confidence)
        row = {"id": clip_id, "labels": pred.labels, "confidence": conf, "confidence_raw": pred.confidence,
               "explanation": pred.think, "aus": pred.aus, "raw": texts[0], "error": None, "model": self.model_name,
               "fingerprint": fingerprint}
        if len(texts) > 1:
            row["samples"] = list(texts[1:])
        return row

    def _decode_all(self, clips: Sequence[Clip]) -> tuple[list[DecodedClip | None], dict[str, str]]:
        decoded: list[DecodedClip | None] = []
        errors: dict[str, str] = {}
        for clip in clips:
            try:
                decoded.append(self.decode(clip))
            except (MediaError, OSError) as err:
                decoded.append(None)
                errors[clip.id] = str(err)
        return decoded, errors

    @torch.inference_mode()
    def generate(self, clips: Sequence[Clip], decoded: Sequence[DecodedClip], question: str,
                 gen: GenerationOptions) -> list[list[str]]:
        """Completions per clip (``gen.n`` each) for one batch of decoded clips (one ``generate`` call)."""
        built = build_prompt_inputs(self.processor, _Decoded(decoded), clips, [question] * len(clips),
                                    self.modalities)
        inputs = built.inputs.to(self.model.device)
        if gen.seed is not None:
            torch.manual_seed(gen.seed)
        kwargs = {**gen.generate_kwargs(self.processor.tokenizer), "suppress_tokens": self._suppressed()}
        if gen.n > 1:  # each clip's prompt (with its media) is prefilled once, its KV cache copied to the n answers
            n = kwargs.pop("num_return_sequences")
            ids = generate_prefill_once(self.model, num_return_sequences=n, **inputs, **kwargs)
        else:
            ids = self.model.generate(**inputs, **kwargs)
        texts = self.processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return [texts[i * gen.n:(i + 1) * gen.n] for i in range(len(clips))]

    def _suppressed(self) -> list[int]:
        """Media placeholder ids: a generated placeholder would ask for media that do not exist (as in training)."""
        return sorted(self.model.config.media_token_ids.values())

    def label(self, clips: Sequence[Clip], question: str | None = None, gen: GenerationOptions | None = None,
              decoded: Sequence[DecodedClip] | None = None) -> list[dict[str, Any]]:
        """Label-output rows, one per clip, in order; an undecodable clip gets a row with ``error`` set.

        Args:
            clips: the clips.
            question: the user question (default: the model's training question).
            gen: decoding settings (default: greedy, 128 new tokens).
            decoded: the clips already decoded (e.g. by DataLoader workers), in the same order; None decodes here.
        """
        gen = gen or GenerationOptions()
        q = self.question(question)
        fingerprint = self.fingerprint_for(question, gen)
        if decoded is None:
            found, errors = self._decode_all(clips)
        else:
            found, errors = list(decoded), {}
        rows: dict[str, dict[str, Any]] = {c.id: self.error_row(c.id, e, fingerprint) for c, e in
                                           ((c, errors.get(c.id)) for c in clips) if e is not None}
        good = [(c, d) for c, d in zip(clips, found) if d is not None]
        for start in range(0, len(good), self.batch_size):
            chunk = good[start:start + self.batch_size]
            texts = self.generate([c for c, _ in chunk], [d for _, d in chunk], q, gen)
            post = self.posteriors([c for c, _ in chunk], [d for _, d in chunk]) or [None] * len(chunk)
            rows.update({c.id: self.row(c.id, t, fingerprint, p) for (c, _), t, p in zip(chunk, texts, post)})
        return [rows[c.id] for c in clips]

    def chat_inputs(self, clip: Clip, decoded: DecodedClip, question: str, history: list[dict] | None) -> Any:
        """Processor inputs of a conversation: media placeholders in the first user turn, ``history`` (earlier
        ``{"role", "content"}`` turns, plain text) and then ``question``."""
        present = present_modalities(decoded, self.modalities)
        if not history:
            turns = messages(present, clip.transcript, question=question)
        else:
            first, *rest = history
            turns = [{"role": "system", "content": SYSTEM_PROMPT},
                     {"role": "user", "content": user_content(present, clip.transcript, first["content"])},
                     *rest, {"role": "user", "content": question}]
        text = self.processor.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        return self.processor([text], clip_ids=[clip.id], **media_kwargs([decoded], [present]))

    def stream(self, clip: Clip, question: str | None = None, history: list[dict] | None = None,
               gen: GenerationOptions | None = None) -> Iterator[str]:
        """Text pieces of one answer as they are generated (transformers' ``TextIteratorStreamer``).

        Raises:
            MediaError: the clip cannot be decoded (before anything is generated).
        """
        from transformers import TextIteratorStreamer

        gen = gen or GenerationOptions()
        inputs = self.chat_inputs(clip, self.decode(clip), self.question(question), history).to(self.model.device)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {**gen.generate_kwargs(self.processor.tokenizer), "num_return_sequences": 1}
        if gen.seed is not None:
            torch.manual_seed(gen.seed)

        failed: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**inputs, streamer=streamer, suppress_tokens=self._suppressed(), **kwargs)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread below
                failed.append(err)
                streamer.end()  # unblock the reader, which would otherwise wait for tokens forever

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        yield from streamer
        worker.join()
        if failed:
            raise failed[0]
