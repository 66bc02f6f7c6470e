"""Generation: our own decoding loop (KV cache), later speculative decoding and cascades."""
