"""EmoWorld: a fast synthetic audio-visual emotion world with known ground truth (``affectllm data synth``).

``world`` (knobs and latent state), ``render`` (the drawn AU face video), ``voice`` (source-filter speech), ``text``
(transcripts, captions, gold labels), ``oracle`` (Bayes oracle and baselines), ``generate`` (the job and its
scoring). See docs/emoworld.md.
"""
