"""affectllm: train and serve multimodal LLMs that reason about human emotion in video."""

__version__ = "0.1.0"
