"""``gemma-core train``, ``eval``, ``tokenizer train`` and ``data wikipedia``.

``train`` is one client of the training engine: it starts the engine's thread,
draws a rich progress bar from its events, and turns Ctrl-C or SIGTERM into a
clean stop with a checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

from gemma_core.cli.output import OutputLost, output_lost
from gemma_core.errors import EXIT_INTERRUPTED, InternalError, UserError
from gemma_core.atomic import check_output_file
from gemma_core.run.checkpoint_state import read_checkpoint_state
from gemma_core.tokenizers.tokenizer import from_ranks_file, token_byte_lengths, train_bpe, write_ranks

_HELP = {
    "output_dir": "where the run's files go (default: output)",
    "learning_rate": "peak learning rate after warmup",
    "max_steps": "optimizer steps to train",
    "warmup_steps": "linear warmup, in optimizer steps",
    "min_lr": "AdamW's learning rate at the end of the decay (default: learning_rate / 10; Muon's "
              "ends at the same fraction of its peak)",
    "optimizer": "adamw, or muon: Muon for the decoder layers' weight matrices, AdamW (at --learning_rate) "
                 "for embeddings, norms and head; learns more per token, costs more per step",
    "muon_learning_rate": "Muon's peak learning rate (with --optimizer muon; default 0.01 on demo, 0.02 "
                          "on the other presets)",
    "muon_momentum": "Muon's momentum, reached after rising from 0.85 over its first 300 steps",
    "schedule": "cosine: decay from the end of warmup; wsd: warmup, hold the peak, decay linearly "
                "over the last --decay_fraction of the steps",
    "decay_fraction": "with --schedule wsd: the share of the steps spent decaying (default 0.2)",
    "eval_iters": "evaluate every this many optimizer steps",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "train_batch_size": "windows per micro-batch",
    "val_batch_size": "windows per validation batch",
    "max_length": "tokens per training window",
    "stride": "tokens between the starts of two training windows",
    "eos_token": "the end-of-text token placed between documents",
    "logging_steps": "write a training log entry every this many steps",
    "weight_decay": "decoupled weight decay (matrices only; Muon's too)",
    "seed": "seed for initialisation, data order and sampling",
    "tiktoken_encoder_name": "tokenizer: gpt2, shakespeare-4k, a .tiktoken file, or a tiktoken encoding",
    "train_dataset_path": ".jsonl/.txt file, directory or glob (default: the bundled Shakespeare)",
    "val_dataset_path": "validation data (default: a held-out part of the training data)",
    "test_dataset_path": "test data, evaluated by 'gemma-core eval'",
    "preset": "model and training defaults: seed-270m, gemma-3-270m, demo, nano (default: demo)",
    "val_fraction": "fraction of the training tokens held out when no validation path is given",
    "text_field": "the JSONL field holding the text",
    "save_steps": "write a resumable checkpoint every this many steps",
    "eval_batches": "validation batches per evaluation (a fixed subset)",
    "grad_clip": "clip the gradient norm to this (0: no clipping)",
    "device": "auto, cpu or cuda",
    "dtype": "auto, bf16 or fp32 (autocast over fp32 master weights; never fp16)",
    "attention": "attention kernel: auto, eager, sdpa, flex",
    "init_from": "start from the weights of this checkpoint directory",
    "cache_dir": "where token caches live (default: ~/.cache/gemma-studio/tokens)",
    "sample_every": "print a sample of each --sample_prompt every this many steps",
    "sample_tokens": "tokens per sample",
    "max_bad_steps": "stop after this many non-finite steps in a row",
    "serve_host": "the address the run's API listens on (default 127.0.0.1: this machine only; "
                  "another address lets anyone who can reach it and has the token control the run)",
    "serve_port": "the port of the run's API (default 0: any free port, written to server.json)",
}


# Where each training flag is listed in --help.
FLAG_GROUPS = {
    "run": ("output_dir", "resume", "overwrite", "seed"),
    "model": ("preset", "config", "init_from"),
    "data": ("train_dataset_path", "val_dataset_path", "test_dataset_path", "val_fraction", "text_field",
             "tiktoken_encoder_name", "eos_token", "add_eos_between_documents", "split_on_blank_lines",
             "skip_bad_lines", "max_length", "stride", "cache_dir"),
    "optimisation": ("optimizer", "learning_rate", "muon_learning_rate", "muon_momentum", "weight_decay",
                     "betas", "grad_clip", "train_batch_size",
                     "gradient_accumulation_steps", "max_bad_steps"),
    "schedule": ("max_steps", "warmup_steps", "schedule", "decay_fraction", "min_lr"),
    "evaluation and checkpoints": ("eval_iters", "eval_batches", "val_batch_size", "save_steps", "logging_steps",
                                   "sample_prompt", "sample_every", "sample_tokens"),
    "devices": ("device", "dtype", "compile", "attention", "fsdp"),
    "the run's API": ("serve", "serve_host", "serve_port"),
}
TRAIN_EXAMPLES = """examples:
  %(prog)s --preset nano --max_steps 500 --output_dir runs/nano      a quick run on the bundled corpus
  %(prog)s --resume --output_dir runs/nano --max_steps 1000          train the same run further"""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every training flag, in groups; defaults are SUPPRESSed so explicit flags can be told apart."""
    from gemma_core.train.settings import TrainSettings

    groups = {name: parser.add_argument_group(name) for name in FLAG_GROUPS}
    group_of = {flag: groups[name] for name, flags in FLAG_GROUPS.items() for flag in flags}
    special = {
        "config": dict(help="TOML file with the same keys as these flags and a [model] table (flags override)"),
        "resume": dict(action="store_true", help="continue the run in --output_dir from its checkpoint"),
        "overwrite": dict(action="store_true", help="replace a run already in --output_dir"),
        "compile": dict(action=argparse.BooleanOptionalAction,
                        help="torch.compile the model (the demo preset's default; the first step then "
                             "compiles, about 45 s for the demo model on a CPU)"),
        "betas": dict(nargs=2, type=float, metavar=("BETA1", "BETA2"), help="AdamW betas (default 0.9 0.95)"),
        "sample_prompt": dict(action="append", help="a prompt to sample from during training (repeatable)"),
        "fsdp": dict(action=argparse.BooleanOptionalAction,
                     help="under torchrun: shard parameters, gradients and optimizer state across ranks "
                          "with FSDP2 (default: DDP, each rank a full replica)"),
        "add_eos_between_documents": dict(action=argparse.BooleanOptionalAction,
                                          help="put the end-of-text token between documents (default: on)"),
        "split_on_blank_lines": dict(action=argparse.BooleanOptionalAction,
                                     help="in .txt files, a blank line ends a document (default: off: one "
                                          "document per file)"),
        "skip_bad_lines": dict(action=argparse.BooleanOptionalAction,
                               help="skip JSONL lines that cannot be read, and count them, instead of stopping "
                                    "at the first (default: off)"),
        "serve": dict(action=argparse.BooleanOptionalAction,
                      help="serve the run's API on this machine while it trains, for gemma-tui attach, "
                           "gemma-core status/control and OpenAI clients (default: on)"),
    }
    types = {"learning_rate": float, "min_lr": float, "weight_decay": float, "grad_clip": float,
             "val_fraction": float, "muon_learning_rate": float, "muon_momentum": float,
             "decay_fraction": float}
    hidden = {"model_overrides", "train_texts", "val_texts"}  # the Python API's and TOML's, not flags
    for name in ("config", *TrainSettings.__dataclass_fields__):
        if name in hidden:
            continue
        target = group_of.get(name, parser)
        if name in special:
            options = special[name]
            if name != "config":
                options = dict(options, default=argparse.SUPPRESS)
            target.add_argument(f"--{name}", **options)
            continue
        field = TrainSettings.__dataclass_fields__[name]
        kind = types.get(name)
        if kind is None:
            kind = int if isinstance(field.default, int) or name == "eval_batches" else str
        target.add_argument(f"--{name}", type=kind, default=argparse.SUPPRESS, help=_HELP.get(name))
    parser.epilog = TRAIN_EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def settings_from_args(args: argparse.Namespace):
    """TrainSettings from parsed flags: the library's own for_preset / for_resume, so the
    command line and Python can never disagree on defaults."""
    from gemma_core.train.settings import TrainSettings, read_train_config, settings_that_do_nothing

    names = set(TrainSettings.__dataclass_fields__)
    explicit = {k: v for k, v in vars(args).items() if k in names}
    config_file = getattr(args, "config", None)
    given = set(explicit) | (set(read_train_config(Path(config_file))) if config_file else set())
    if explicit.pop("resume", False):
        output_dir = explicit.pop("output_dir", "output")
        settings = TrainSettings.for_resume(output_dir, config_file=config_file, **explicit)
    else:
        settings = TrainSettings.for_preset(explicit.pop("preset", None), config_file=config_file, **explicit)
    for line in settings_that_do_nothing(settings, given):  # kept working (old config files), but said
        print(f"warning: {line}", file=sys.stderr)
    return settings


# --------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from rich.console import Console

    from gemma_core.cli.train_progress import TrainProgress
    from gemma_core.serve.training import serve_training
    from gemma_core.train.engine import TrainingEngine

    settings = settings_from_args(args)
    engine = serve_training(TrainingEngine(settings))  # the run's API, unless --no-serve
    events: queue.Queue = queue.Queue()
    engine.subscribe(events.put)
    # Under torchrun every rank runs this; rank 0 alone speaks.
    console = Console(stderr=False, highlight=False, quiet=not engine.ranks.is_main)
    stop = StopSignals(settings.output_dir)
    shown = TrainProgress(console, settings.max_steps, settings.output_dir)
    lost: UserError | None = None
    stop.install()
    engine.start()
    try:
        with shown.progress:
            while True:
                if stop.requested and not stop.acted:
                    stop.stop_run(engine)
                    shown.print("stopping: saving a checkpoint...")
                if output_lost() is not None:  # nobody hears the run: stop it
                    stop.stop_run(engine)
                try:
                    event = events.get(timeout=0.2)
                except queue.Empty:
                    if not engine.is_alive():
                        break
                    continue
                shown.show(event)
    except OutputLost as err:  # printing failed: stop the run with a checkpoint, then say so
        lost = err
    except BaseException:
        stop.stop_run(engine)  # whatever ended this loop, the run is not left training unwatched
        raise
    finally:
        if lost is not None or output_lost() is not None:
            stop.stop_run(engine)
        while engine.is_alive():
            engine.join(timeout=0.5)
            if stop.requested:
                stop.stop_run(engine)
        stop.uninstall()
    return _exit_status(engine, shown.failure, lost or output_lost(), stop, args.debug)


def _exit_status(engine, failure: str | None, lost: UserError | None, stop: StopSignals, debug: bool) -> int:
    """How ``gemma-core train`` ends once its run has: the run's failure raised (said by
    rank 0 only), lost output said with what was saved, 130 for a stop asked by a signal."""
    if failure is not None:
        if not engine.ranks.is_main:
            return 2  # rank 0 prints the message
        snapshot = engine.snapshot()
        if debug:
            for message in snapshot.messages:
                if message.level == "error":
                    print(message.text, file=sys.stderr)
        raise (InternalError if snapshot.error_internal else UserError)(failure)
    if lost is not None:
        saved = engine.snapshot().last_checkpoint
        where = (f"; the run stopped at step {saved.step} with a checkpoint in {saved.path} (resume with "
                 f"--resume)" if saved is not None else "; the run stopped before its first checkpoint")
        raise UserError(f"{lost}{where}")
    return EXIT_INTERRUPTED if stop.requested and engine.exit_reason == "stopped" else 0


class StopSignals:
    """Ctrl-C, SIGTERM and SIGHUP while training: the first asks the run to stop with a
    checkpoint (the loop acts on it; a signal handler takes no locks); another, a second
    or more later, exits at once. Signals within a quarter second are one stop: ``timeout -s INT``
    and a terminal's Ctrl-C reach the whole process group, so one press can arrive twice."""

    SAME_PRESS_S = 0.25  # a forwarded copy (torchrun, timeout) arrives within milliseconds

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self.requested = False
        self.acted = False
        self._first_at = 0.0
        self._previous: dict[int, object] = {}

    def stop_run(self, engine) -> None:
        """Ask the run to stop with a checkpoint, once, whatever asked first."""
        if not self.acted:
            self.acted = True
            engine.stop(save=True)

    def _step_on_disk(self) -> int | None:
        """The step of the newest complete checkpoint on disk (what an exit now keeps)."""
        try:
            return read_checkpoint_state(Path(self.output_dir))["step"]
        except UserError:  # none yet, or unreadable
            return None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if sig == signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN:
                continue  # nohup: leave it ignored
            self._previous[sig] = signal.signal(sig, self._received)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _received(self, signum, frame) -> None:
        now = time.monotonic()
        if not self.requested:
            self.requested, self._first_at = True, now
            return
        if now - self._first_at < self.SAME_PRESS_S:
            return
        step = self._step_on_disk()
        kept = (f"the last complete checkpoint, step {step}, is kept in {self.output_dir}" if step is not None
                else "no checkpoint of this run was saved")
        with contextlib.suppress(OSError, ValueError):
            print(f"error: interrupted again: exiting without waiting ({kept})", file=sys.stderr, flush=True)
        os._exit(EXIT_INTERRUPTED)  # the trainer thread must not hold the exit up


# ---------------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    import torch

    from gemma_core.data import DataOptions, TokenWindows, build_token_cache
    from gemma_core.device import resolve_device, resolve_dtype
    from gemma_core.run.model_dir import load_model_dir
    from gemma_core.train.evaluation import score_windows

    if args.batch_size < 1:
        raise UserError(f"--batch_size must be 1 or more, got {args.batch_size}")
    if args.max_length is not None and args.max_length < 1:
        raise UserError(f"--max_length must be 1 or more, got {args.max_length}")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model, tokenizer, data = load_model_dir(args.checkpoint, device)
    context = model.cfg.context_length
    if args.max_length is not None and args.max_length > context:
        raise UserError(f"--max_length {args.max_length} is above the model's context_length {context}; "
                        "give a length the model was built for")
    training = data.get("training") if isinstance(data.get("training"), dict) else {}
    trained_length = training.get("max_length")
    if not isinstance(trained_length, int) or not 1 <= trained_length <= context:
        trained_length = min(1024, context)
    max_length = args.max_length or trained_length
    shards = build_token_cache(args.dataset, tokenizer, DataOptions(text_field=args.text_field), args.cache_dir)
    windows = TokenWindows(shards.tokens, max_length, max_length, name=str(args.dataset))
    batches = [range(start, min(start + args.batch_size, len(windows)))
               for start in range(0, len(windows), args.batch_size)]
    score = score_windows(model, windows, batches, torch.from_numpy(token_byte_lengths(tokenizer)),
                          device, dtype)
    print(f"dataset {args.dataset}: {score.tokens:,} tokens in {len(windows)} windows of {max_length}")
    print(f"loss {score.loss:.4f}  perplexity {score.perplexity:.2f}  bits/byte {score.bits_per_byte:.4f}")
    return 0


# ------------------------------------------------------------------ tokenizer
MAX_TRAINED_VOCAB = 2**20  # four times Gemma 3's own vocabulary


def cmd_tokenizer_train(args) -> int:
    from gemma_core.data.documents import DataOptions, iter_text

    if not 258 <= args.vocab_size <= MAX_TRAINED_VOCAB:
        raise UserError(f"--vocab_size must be from 258 (the bytes, one merge and <|endoftext|>) to "
                        f"{MAX_TRAINED_VOCAB:,}, got {args.vocab_size:,}")
    output = check_output_file(Path(args.output), args.overwrite)
    # Streamed: the corpus is never held in memory whole, whatever its size.
    ranks = train_bpe(iter_text(args.input, DataOptions(text_field=args.text_field)), args.vocab_size)
    write_ranks(ranks, output)
    tokenizer = from_ranks_file(output)
    print(f"wrote {output}: {tokenizer.n_vocab} tokens ({len(ranks)} ranks + <|endoftext|>)")
    return 0


# ----------------------------------------------------------------- wikipedia
def cmd_data_wikipedia(args) -> int:
    from gemma_core.data.wikipedia import export_wikipedia

    export_wikipedia(args.output_dir, n_train=args.train, n_val=args.val, n_test=args.test,
                     overwrite=args.overwrite)
    print(f"wrote train.jsonl, val.jsonl, test.jsonl to {args.output_dir}")
    return 0


def add_commands(commands) -> None:
    train = commands.add_parser(
        "train", help="train a model (default: the demo preset on the bundled Shakespeare)",
        description="Train a Gemma 3 model. With no arguments: the demo preset on the bundled "
                    "Shakespeare corpus, on the best device here. Ctrl-C saves a checkpoint.")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("eval", help="loss, perplexity and bits per byte on a dataset")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint directory")
    evaluate.add_argument("--dataset", required=True, help=".jsonl/.txt file, directory or glob")
    evaluate.add_argument("--text_field", default="text")
    evaluate.add_argument("--max_length", type=int, default=None)
    evaluate.add_argument("--batch_size", type=int, default=4)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--dtype", default="auto")
    evaluate.add_argument("--cache_dir", default=None)
    evaluate.set_defaults(func=cmd_eval)

    tokenizer = commands.add_parser("tokenizer", help="tokenizer tools")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
    train_tok = tokenizer_commands.add_parser(
        "train", help="train a byte-level BPE and save it as a .tiktoken ranks file")
    train_tok.add_argument("--input", nargs="+", required=True, help=".jsonl/.txt files, directories or globs")
    train_tok.add_argument("--vocab_size", type=int, required=True, help="ids in all, <|endoftext|> included")
    train_tok.add_argument("--output", required=True, help="the .tiktoken file to write")
    train_tok.add_argument("--text_field", default="text")
    train_tok.add_argument("--overwrite", action="store_true")
    train_tok.set_defaults(func=cmd_tokenizer_train)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    wiki = data_commands.add_parser(
        "wikipedia", help="sample wikimedia/wikipedia 20231101.en as the seed did (needs network)")
    wiki.add_argument("--output_dir", required=True)
    wiki.add_argument("--train", type=int, default=10_000)
    wiki.add_argument("--val", type=int, default=1_000)
    wiki.add_argument("--test", type=int, default=1_000)
    wiki.add_argument("--overwrite", action="store_true", help="replace train/val/test.jsonl already there")
    wiki.set_defaults(func=cmd_data_wikipedia)
