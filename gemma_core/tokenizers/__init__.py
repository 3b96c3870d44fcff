"""Tokenizers: text <-> token ids, offline.

``tokenizer`` holds the tiktoken-based ``Tokenizer`` and how to load one by name,
file or checkpoint record; ``ranks`` reads, writes and trains tiktoken's ranks
files; ``hf_json`` converts to and from Hugging Face ``tokenizer.json`` and runs
tokenizers tiktoken cannot express (Gemma's own); ``byte_alphabet`` is GPT-2's
printable spelling of bytes.
"""
