"""Training: settings in, a trained run out, reported through events.

``settings`` says what to train; ``setup`` turns settings into the run's parts
(device, tokenizer, data, model, optimizer); ``engine`` runs the loop in a
background thread and takes commands; ``step`` is one optimizer step,
``evaluation`` the held-out score; ``state_store`` folds events into the
snapshots clients read. ``optim``, ``flops``, ``memory`` and ``distributed`` are
the pieces a step needs.
"""
