"""Build the byte-level BPE tokenizer of the `tiny` preset (run once; the result is committed).

The tiny preset needs a *real* tokenizer that works offline, so we train a small byte-level BPE (any text encodes;
nothing is unknown) on English prose from the Python standard library's docstrings plus affectllm's own prompt and
emotion vocabulary. Output: ``affectllm/model/assets/tiny_tokenizer/`` (tokenizer.json + tokenizer_config.json).

    .venv/bin/python scripts/build_tiny_tokenizer.py
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from affectllm.model.processor import CHAT_TEMPLATE, SPECIAL_TOKENS

EMOTION_WORDS = """happy happiness joyful joy glad cheerful delighted elated content pleased proud relieved hopeful
excited amused grateful love loving trust calm serene peaceful relaxed neutral indifferent bored tired sad sadness
unhappy sorrowful grief gloomy depressed disappointed lonely hurt angry anger annoyed irritated furious frustrated
rage resentful hostile fear fearful afraid scared anxious nervous worried terrified panic surprise surprised amazed
astonished shocked startled confused disgust disgusted contempt contemptuous embarrassed ashamed guilty shy jealous
envious anticipation interest curious doubtful skeptical sarcastic tense uneasy""".split()
PROMPT_TEXT = [
    "<think>The speaker raises the cheeks (AU6 cheek raiser) and pulls the lip corners (AU12 lip corner puller); "
    "the voice is bright and fast; the words are positive.</think><answer>happy, excited</answer>"
    "<confidence>0.82</confidence>",
    "Watch the clip and describe the emotional cues in the face, the voice and the words, then give the labels.",
    "AU1 inner brow raiser, AU2 outer brow raiser, AU4 brow lowerer, AU5 upper lid raiser, AU6 cheek raiser, "
    "AU7 lid tightener, AU9 nose wrinkler, AU10 upper lip raiser, AU12 lip corner puller, AU14 dimpler, "
    "AU15 lip corner depressor, AU17 chin raiser, AU20 lip stretcher, AU23 lip tightener, AU25 lips part, "
    "AU26 jaw drop, AU45 blink.",
]


def corpus() -> list[str]:
    """Docstrings of importable standard-library modules plus affectllm's own vocabulary."""
    texts = [" ".join(EMOTION_WORDS)] * 20 + PROMPT_TEXT * 20
    for info in sorted(pkgutil.iter_modules(), key=lambda i: i.name):
        if info.name.startswith("_") or info.name in {"antigravity", "this", "idlelib", "tkinter", "turtle"}:
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 - any module that fails to import just contributes nothing
            continue
        for _, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj)
            if doc:
                texts.append(doc)
        if len(texts) > 20000:
            break
    return texts


def build(out: Path, vocab_size: int) -> None:
    """Train the BPE and save it with our special tokens and chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL_TOKENS["bos"],
                                   eos_token=SPECIAL_TOKENS["eos"], pad_token=SPECIAL_TOKENS["pad"],
                                   unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    print(f"wrote {out} (vocab {len(fast)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "affectllm/model/assets/tiny_tokenizer"))
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args()
    build(Path(args.out), args.vocab_size)
