"""A run on disk: its folder, logs, checkpoints and model directories.

``layout`` names a run folder's files and decides who may write there; ``logs``
appends and rewrites the seed's logs; ``checkpoints`` saves and restores the
resumable state; ``model_dir`` reads and writes loadable model directories;
``history`` replays the logs into a run's curves; ``viewer`` opens a finished run.
"""
