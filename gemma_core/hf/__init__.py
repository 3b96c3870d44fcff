"""Hugging Face interop: transformers' Gemma 3 names and config, import and export."""
