"""Qwen's tokenizer: token pieces and counts from Qwen's own vocabulary, read offline (see :mod:`.qwen`)."""
