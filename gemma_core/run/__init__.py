"""A run: what it says while it trains, and what it leaves on disk.

``events`` are what a run tells its clients and ``state_store`` folds them into the
snapshots they read; ``handle`` is the one interface a client drives a run through.
On disk: ``layout`` names a run folder's files and decides who may write there;
``logs`` appends and rewrites the seed's logs (``samples_log``, ``chart_files`` and
``run_summary`` are the others it writes); ``checkpoint_state`` reads a checkpoint's
small state file; ``model_dir`` reads and writes loadable model directories;
``history`` replays the logs into a run's curves (``log_follower`` tails them);
``status`` says how a run on disk stands; ``viewer`` opens a finished run.
Nothing here trains or serves: ``train`` and ``serve`` sit above this package.
"""
