"""Data: the clip manifest, source-dataset loaders, EmoWorld and prep (light: import submodules as needed).

``affectllm.data.manifest`` holds the manifest schema (DESIGN.md §3); ``affectllm.data.datasets`` registers the
source-dataset loaders in :data:`affectllm.registry.DATASETS` when imported.
"""
