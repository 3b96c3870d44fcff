"""Tokenizers: text <-> token ids, offline.

``tokenizer`` holds the tiktoken-based ``Tokenizer``, how to load one by name,
ranks file or checkpoint record, tiktoken's ranks format and BPE training
(rustbpe); ``hf_json`` converts to and from Hugging Face ``tokenizer.json`` and
runs tokenizers tiktoken cannot express (Gemma's own); ``byte_alphabet`` is
GPT-2's printable spelling of bytes.
"""
