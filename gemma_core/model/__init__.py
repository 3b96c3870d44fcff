"""The model: Gemma 3's architecture and how to run it.

``config`` describes an architecture, ``presets`` names the shipped ones (each
with its tokenizer and training defaults), ``model`` is the network in one page,
``attention`` the kernels behind one interface, ``kv_cache`` and ``generation``
decode text from it, ``weights`` says how files hold its tensors (a tied head once),
``summary`` prints its tree and parameter counts.
"""
