"""From a clip to model inputs: ``store`` (decoded or prepped media by clip id), ``collate`` (prompt text, processor
arguments, the SFT collator), ``features`` (the frozen-tower encoder-feature cache) and ``prep`` (``data prep``)."""
