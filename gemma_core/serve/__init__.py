"""A run's HTTP API, and its clients: the top of the library below the CLI.

``server`` runs the HTTP server around a run handle (``app`` routes, ``openai_api``
checks OpenAI-shaped requests, ``completion_work`` and ``inspect_work`` do the work
on the run's compute turns, ``connections`` limits them) and writes ``server_files``
so others can find it; ``training`` serves a training engine's run while it trains.
``client`` talks to a server from another process (``wire`` turns events to JSON and
back); ``status`` says how any run stands, live or on disk; ``catalog`` lists the runs
under a folder for a picker.
"""
