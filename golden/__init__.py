"""numpy golden reference: GGUF loading, float and integer forward passes, tokenizer."""
