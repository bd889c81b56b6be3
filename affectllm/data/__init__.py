"""Data: the clip manifest contract, ``data check`` and the source-dataset importers (light: import submodules as
needed).

``affectllm.data.manifest`` holds the manifest schema (DESIGN.md §3); ``affectllm.data.sources`` registers the
source-dataset importers in :data:`affectllm.registry.DATASETS` when imported. EmoWorld lives in
:mod:`affectllm.emoworld`, the path from a clip to model inputs (store, collator, feature cache, prep) in
:mod:`affectllm.inputs`.
"""
