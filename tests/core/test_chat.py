"""Chat beside training: one shared copy of the weights, labelled with its true step, and
on a CPU never decoding while a training step runs, one reply at a time."""

from __future__ import annotations

import copy
import threading
import time
from types import SimpleNamespace

import torch

from gemma_core.chat import (END_OF_TURN, ChatJob, ChatService, ComputeTurns, FixedWeights, InferenceCopy,
                             LiveWeights)
from gemma_core.model.generation import SamplingParams
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import preset
from gemma_core.tokenizers.tokenizer import load_tokenizer


def nano_model() -> Gemma3Model:
    torch.manual_seed(0)
    return Gemma3Model(preset("nano")).eval()


def test_two_waiting_replies_never_decode_together_or_while_a_step_runs():
    turns = ComputeTurns()
    turns.own_cores(True)
    intervals: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def busy(who: str) -> None:
        start = time.perf_counter()
        time.sleep(0.01)
        with lock:
            intervals.append((who, start, time.perf_counter()))

    def reply(name: str) -> None:
        for _ in range(10):
            turns.run_chunk(lambda: busy(name))

    replies = [threading.Thread(target=reply, args=(f"reply-{i}",)) for i in range(2)]
    for thread in replies:
        thread.start()
    deadline = time.monotonic() + 20
    while any(t.is_alive() for t in replies) and time.monotonic() < deadline:
        busy("trainer")  # a training step
        turns.between_steps()
    turns.own_cores(False)
    for thread in replies:
        thread.join(5)
    assert sum(1 for who, *_ in intervals if who.startswith("reply")) == 20
    ordered = sorted(intervals, key=lambda item: item[1])
    for (who_a, _, end_a), (who_b, start_b, _) in zip(ordered, ordered[1:]):
        assert start_b >= end_a, f"{who_a} and {who_b} ran at the same time"


def test_a_reply_streamed_back_to_back_gets_its_share_of_a_training_run_not_more():
    turns = ComputeTurns(chat_share=0.2, allowance_cap_s=0.02)
    turns.own_cores(True)
    spent = {"trainer": 0.0, "reply": 0.0}
    done = threading.Event()

    def busy(who: str, seconds: float) -> None:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            pass
        spent[who] += time.perf_counter() - start

    def reply() -> None:
        while not done.is_set():  # a chunk costs as much as a training step
            turns.run_chunk(lambda: busy("reply", 0.01))

    thread = threading.Thread(target=reply)
    thread.start()
    time.sleep(0.05)
    for _ in range(200):
        busy("trainer", 0.01)  # a training step
        turns.between_steps()
    done.set()
    turns.own_cores(False)
    thread.join(5)
    share = spent["reply"] / (spent["reply"] + spent["trainer"])
    assert 0.12 < share < 0.26  # about 0.2; without the budget a chunk after every step: 0.5


def test_a_reply_never_computes_on_the_callers_thread():
    """A long-lived caller (a server's event loop) that computed once would keep a second
    OpenMP team alive and slow training by a fifth for as long as it lives: the weights are
    taken by the thread that owns the cores, or by the reply's own short-lived thread."""

    class RecordingWeights:
        def __init__(self, model):
            self.model, self.threads = model, []

        def acquire(self):
            self.threads.append(threading.current_thread())
            return self.model, 7

        def release(self):
            pass

    tokenizer = load_tokenizer("shakespeare-4k")
    weights = RecordingWeights(nano_model())
    turns = ComputeTurns()
    service = ChatService(weights, tokenizer, torch.float32, turns)
    params = SamplingParams(max_new_tokens=3, temperature=0, stop_at_eos=False)
    job = service.chat("To be", params)  # nobody owns the cores: the reply's own thread
    assert job.step == 7 and job.wait(30)
    assert weights.threads[-1].name == "gemma-chat"

    stop = threading.Event()
    owner = threading.Thread(target=turns.serve, args=(stop,), name="owner")
    owner.start()
    try:
        while not turns._owned:
            time.sleep(0.01)
        job = service.chat("To be", params)
        assert job.step == 7 and job.wait(30) and job.error is None
        assert weights.threads[-1] is owner
    finally:
        stop.set()
        owner.join(5)
    assert threading.current_thread() not in weights.threads


def test_the_thread_that_owns_the_cores_does_each_replys_work_and_reports_its_errors():
    turns = ComputeTurns()
    stop = threading.Event()
    server = threading.Thread(target=turns.serve, args=(stop,))
    server.start()
    try:
        deadline = time.monotonic() + 5
        while not turns._owned and time.monotonic() < deadline:
            time.sleep(0.01)
        ran_on: list[threading.Thread] = []
        turns.run_chunk(lambda: ran_on.append(threading.current_thread()))
        assert ran_on == [server]

        def broken() -> None:
            raise ValueError("bad token")

        try:
            turns.run_chunk(broken)
        except ValueError as err:
            assert str(err) == "bad token"  # raised in the reply's thread, not the owner's
        else:
            raise AssertionError("the chunk's error was lost")
        assert server.is_alive()
    finally:
        stop.set()
        server.join(5)
    ran_on.clear()
    turns.run_chunk(lambda: ran_on.append(threading.current_thread()))
    assert ran_on == [threading.current_thread()]  # nobody owns the cores: the reply's own thread


def test_a_reply_waiting_when_the_trainer_lets_go_does_its_work_itself():
    turns = ComputeTurns()
    turns.own_cores(True)
    ran_on: list[threading.Thread] = []
    reply = threading.Thread(target=turns.run_chunk, args=(lambda: ran_on.append(threading.current_thread()),))
    reply.start()
    deadline = time.monotonic() + 5
    while not turns._waiting and time.monotonic() < deadline:
        time.sleep(0.01)
    turns.own_cores(False)  # paused before the next step: no gap will come
    reply.join(5)
    assert ran_on == [reply] and not turns._waiting


def test_one_copy_of_the_weights_serves_every_reply_and_follows_the_training():
    model = nano_model()
    live = LiveWeights(model, step=3)
    shared = InferenceCopy(live)
    first, step = shared.acquire()
    second, same_step = shared.acquire()
    assert first is second and step == same_step == 3 and first is not model
    with live.updating(4), torch.no_grad():
        model.embed_tokens.weight.add_(1.0)
    third, _ = shared.acquire()
    assert third is first  # in use by two replies: not changed under them
    for _ in range(3):
        shared.release()
    refreshed, step = shared.acquire()
    assert refreshed is first and step == 4  # refreshed in place, not copied again
    assert torch.equal(refreshed.embed_tokens.weight, model.embed_tokens.weight)


def test_a_reply_is_labelled_with_the_step_its_weights_belong_to():
    model = nano_model()
    live = LiveWeights(model, step=0)
    shared = InferenceCopy(live)
    done = threading.Event()

    def train() -> None:
        for step in range(1, 200):
            with live.updating(step), torch.no_grad():  # the weights of step k hold the value k
                for param in model.parameters():
                    param.fill_(float(step))
        done.set()

    trainer = threading.Thread(target=train)
    trainer.start()
    seen = 0
    while not done.is_set():
        copy_, step = shared.acquire()
        assert float(copy_.embed_tokens.weight[0, 0]) == float(step)
        shared.release()
        seen += 1
    trainer.join()
    assert seen > 0


def test_concurrent_chats_make_no_copy_of_their_own(monkeypatch):
    copies = []
    real_deepcopy = copy.deepcopy

    def counting_deepcopy(obj, *args):
        if isinstance(obj, Gemma3Model):
            copies.append(obj)
        return real_deepcopy(obj, *args)

    monkeypatch.setattr(copy, "deepcopy", counting_deepcopy)
    service = ChatService(InferenceCopy(LiveWeights(nano_model(), step=5)), load_tokenizer("shakespeare-4k"),
                          torch.float32)
    params = SamplingParams(max_new_tokens=8, temperature=0)
    jobs = [service.chat("ROMEO:", params) for _ in range(3)]
    for job in jobs:
        assert job.wait(60) and job.error is None and job.step == 5
    assert len(copies) == 1


def test_a_job_is_written_through_its_public_producer_side():
    job = ChatJob("hi", SamplingParams(), step=2)
    job.put("hel")
    job.put("lo")
    assert job.take() == "hello" and not job.done
    job.finish()
    assert job.done and list(job) == [] and job.error is None
    failed = ChatJob.failed("hi", SamplingParams(), 0, "not ready")
    assert failed.done and failed.error == "not ready"


def test_a_finished_run_answers_from_its_own_model():
    model = nano_model()
    service = ChatService(FixedWeights(model, step=30), load_tokenizer("shakespeare-4k"), torch.float32)
    job = service.chat("KING:", SamplingParams(max_new_tokens=5, temperature=0))
    assert job.wait(60) and job.error is None and job.step == 30


# ------------------------------------------------- turns sized by time, on an injected clock
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


CPU_MODEL = SimpleNamespace(embed_tokens=SimpleNamespace(weight=SimpleNamespace(device=SimpleNamespace(type="cpu"))))
TOKEN_S = 0.01  # what decoding one token costs on the fake clock


def decoding(clock: FakeClock, decoded: list[str], tokens: int = 2000, end_turn_every: int = 0):
    """Work that decodes ``tokens`` tokens into ``decoded``, each costing ``TOKEN_S`` on ``clock``."""
    def pieces_of(model, dtype, job):
        for n in range(1, tokens + 1):
            clock.advance(TOKEN_S)
            decoded.append(threading.current_thread().name)
            yield "x"
            if end_turn_every and n % end_turn_every == 0:
                yield END_OF_TURN
    return pieces_of


class FakeTrainer:
    """Plays the training thread: a step is the clock moving on, then ``between_steps``."""

    def __init__(self, chat_share: float = 0.2, allowance_cap_s: float = 0.05) -> None:
        self.clock = FakeClock()
        self.turns = ComputeTurns(chat_share=chat_share, allowance_cap_s=allowance_cap_s, clock=self.clock)
        self.turns.own_cores(True)
        self.service = ChatService(FixedWeights(CPU_MODEL, step=3), None, torch.float32, self.turns)
        self.jobs: list[ChatJob] = []
        self.decoded: list[str] = []  # the thread that decoded each token
        self._starters: list[threading.Thread] = []

    def reply(self, per_turn: int = 4, **decoding_options) -> None:
        """Ask for a reply; it starts in the next turn (``compute`` waits for it, so another thread asks)."""
        starter = threading.Thread(target=lambda: self.jobs.append(
            self.service.compute(decoding(self.clock, self.decoded, **decoding_options), per_turn)))
        starter.start()
        self._starters.append(starter)
        self._wait_for_a_waiting_chunk()

    def step(self, seconds: float) -> int:
        """Train for ``seconds``, then give replies their turn; the tokens they got in it."""
        if self._starters:
            self._wait_for_a_waiting_chunk()
        before = len(self.decoded)
        self.clock.advance(seconds)
        self.turns.between_steps()
        assert set(self.decoded[before:]) <= {threading.current_thread().name}  # by the trainer
        return len(self.decoded) - before

    def _wait_for_a_waiting_chunk(self) -> None:
        deadline = time.monotonic() + 60
        while not self.turns._waiting and time.monotonic() < deadline:
            time.sleep(0.005)
        assert self.turns._waiting, "the reply never asked for a turn"

    def close(self) -> None:
        self.turns.own_cores(False)  # what is left of the replies runs on their own threads
        for starter in self._starters:
            starter.join(60)
        for job in self.jobs:
            assert job.wait(60) and job.error is None


def test_a_long_training_step_earns_a_reply_tokens_in_proportion_to_its_length():
    trainer = FakeTrainer(chat_share=0.2, allowance_cap_s=0.05)  # a second of training earns 0.25 s
    try:
        trainer.reply()
        first = trainer.step(0.2)
        after_long = [trainer.step(2.0) for _ in range(3)]  # 0.5 s earned: about 50 tokens
        after_short = [trainer.step(0.2) for _ in range(3)]  # 0.05 s earned: about 5 tokens
    finally:
        trainer.close()
    assert 4 <= first <= 6  # the cap's worth: the first turn of a reply after a quiet spell
    assert all(48 <= n <= 52 for n in after_long), after_long  # one 4-token chunk a step before
    assert all(4 <= n <= 6 for n in after_short), after_short


def test_a_replys_first_tokens_come_in_the_turn_that_chooses_its_weights():
    trainer = FakeTrainer(allowance_cap_s=0.05)
    try:
        trainer.reply()
        tokens = trainer.step(1.0)
    finally:
        trainer.close()
    assert tokens >= 4  # not a turn spent on the weights alone, and the tokens a step later


def test_replies_get_their_share_of_long_steps_but_a_quiet_spell_saves_up_only_a_burst():
    trainer = FakeTrainer(chat_share=0.2, allowance_cap_s=0.05)
    try:
        for _ in range(50):  # 100 s of training with nobody chatting
            trainer.step(2.0)
        trainer.reply()
        burst = trainer.step(0.0)
        tokens = [trainer.step(4.0) for _ in range(5)]
    finally:
        trainer.close()
    assert 4 <= burst <= 6  # the cap's worth, not 100 s worth of share
    share = sum(tokens) * TOKEN_S / (sum(tokens) * TOKEN_S + 5 * 4.0)
    assert 0.18 <= share <= 0.22  # the design's 0.2 of the time, however long the steps


def test_end_of_turn_ends_a_turn_early_only_when_its_time_is_spent():
    trainer = FakeTrainer(chat_share=0.2, allowance_cap_s=0.05)
    try:
        trainer.reply(per_turn=1000, end_turn_every=4)  # as the API's work marks its turns
        trainer.step(0.2)
        long_turn = trainer.step(2.0)
    finally:
        trainer.close()
    assert 48 <= long_turn <= 52


def test_a_turn_between_training_steps_decodes_on_one_thread_and_gives_the_threads_back():
    """On a busy 2-core machine the trainer's team of two decoded 15-20x slower than one thread."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        turns = ComputeTurns()
        turns.own_cores(True)
        seen: list[int] = []
        reply = threading.Thread(target=turns.run_chunk, args=(lambda: seen.append(torch.get_num_threads()),))
        reply.start()
        deadline = time.monotonic() + 60
        while not turns._waiting and time.monotonic() < deadline:
            time.sleep(0.005)
        turns.between_steps()
        reply.join(60)
        turns.own_cores(False)
        assert seen == [1]
        assert torch.get_num_threads() == 2  # training goes on with all its threads
    finally:
        torch.set_num_threads(threads_before)
