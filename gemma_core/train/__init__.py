"""Training: settings in, a trained run out, reported through events.

``settings`` says what to train (``config_file`` reads it from a file); ``setup``
turns settings into the run's parts (device, tokenizer, data, model, optimizer);
``engine`` runs the loop in a background thread and takes commands; ``step`` is one
optimizer step, ``evaluation`` the held-out score; ``checkpoints`` saves and
restores the resumable state. ``optim``, ``flops``, ``memory``, ``compiled_loss``
and ``distributed`` are the pieces a step needs. The engine starts no server: a
caller that wants the run's HTTP API adds it as a companion (``serve.training``).
"""
