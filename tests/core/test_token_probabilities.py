"""Each token of a chat reply can carry how sure the model was of it, and what else it weighed.

What a user relies on: the probability shown for a token is the model's own (the softmax of
its logits at that position, before temperature, top-k and top-p), the chosen token is among
the alternatives listed, the tokens' text is the reply's text, nothing is computed for a reply
that did not ask, and a studio attached to a run over HTTP gets the same numbers as one in
the run's process.
"""

from __future__ import annotations

import http.client
import json
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import torch

from gemma_core.chat import ChatService, FixedWeights, check_chat_request
from gemma_core.errors import UserError
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import preset
from gemma_core.model.sampling import SamplingParams
from gemma_core.model.token_choices import ChoiceBuilder, choices_from_logprobs
from gemma_core.serve.client import RemoteChatJob, RunClient
from gemma_core.serve.openai_api import Limits
from gemma_core.serve.server import RunServer
from gemma_core.tokenizers.tokenizer import load_tokenizer

TOKENIZER = load_tokenizer("shakespeare-4k")
PROMPT = "ROMEO:\nBut soft, what light"
STEP = 12
SAMPLED = SamplingParams(max_new_tokens=12, temperature=0.9, top_k=40, seed=7, stop_at_eos=False)
GREEDY = SamplingParams(max_new_tokens=12, temperature=0.0, stop_at_eos=False)


def nano_with_opinions() -> Gemma3Model:
    """Nano, with weights large enough that the model is sure of some tokens and not others
    (a fresh model's near-uniform guesses would make every probability look alike)."""
    torch.manual_seed(0)
    net = Gemma3Model(preset("nano"))
    with torch.no_grad():
        for param in net.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.2)
    return net.eval()


@pytest.fixture(scope="module")
def model() -> Gemma3Model:
    return nano_with_opinions()


def reply(service, params: SamplingParams, alternatives: int = 5):
    job = service.chat(PROMPT, params, alternatives=alternatives)
    text = "".join(job)  # iterating waits for the end
    assert job.error is None, job.error
    return text, job.take_tokens()


def generated_ids(model: Gemma3Model, params: SamplingParams) -> tuple[list[int], list[int]]:
    """The prompt's ids and the ids the same settings and seed generate."""
    from gemma_core.model.generation import generate_tokens

    prompt_ids = TOKENIZER.encode_document(PROMPT)
    ids = list(generate_tokens(model, prompt_ids, params, TOKENIZER.eos_id, bos_id=TOKENIZER.bos_id))
    return prompt_ids, ids


def own_probabilities(model: Gemma3Model, prompt_ids: list[int], ids: list[int]) -> torch.Tensor:
    """softmax of the model's logits at each generated position, from one plain forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + ids[:-1]]))[0, len(prompt_ids) - 1:]
    return torch.softmax(logits.float(), dim=-1)


@pytest.mark.parametrize("params", [SAMPLED, GREEDY], ids=["sampled", "greedy"])
def test_each_token_carries_the_softmax_of_the_models_own_logits_and_its_likeliest_alternatives(model, params):
    service = ChatService(FixedWeights(model, STEP), TOKENIZER, torch.float32)
    text, choices = reply(service, params)
    prompt_ids, ids = generated_ids(model, params)
    expected = own_probabilities(model, prompt_ids, ids)
    assert len(choices) == len(ids) == params.max_new_tokens
    for position, (choice, token_id) in enumerate(zip(choices, ids)):
        probabilities = expected[position]
        assert choice.token_bytes == TOKENIZER.token_bytes(token_id)
        assert choice.probability == pytest.approx(float(probabilities[token_id]), abs=1e-5)
        top = torch.topk(probabilities, 5)
        likeliest = choice.alternatives[:5]
        assert [a.token_bytes for a in likeliest] == [TOKENIZER.token_bytes(t) for t in top.indices.tolist()]
        for alternative, probability in zip(likeliest, top.values.tolist()):
            assert alternative.probability == pytest.approx(probability, abs=1e-5)
        assert choice.token_bytes in [a.token_bytes for a in choice.alternatives], "the chosen token is listed"
    assert "".join(choice.text for choice in choices) == text
    assert max(c.probability for c in choices) - min(c.probability for c in choices) > 0.1  # a test that can tell


def test_the_probabilities_shown_are_the_models_whatever_the_temperature(model):
    service = ChatService(FixedWeights(model, STEP), TOKENIZER, torch.float32)
    first = [reply(service, params)[1][0] for params in (
        GREEDY, SamplingParams(max_new_tokens=1, temperature=1.7, top_p=0.5, seed=3, stop_at_eos=False))]
    assert [(a.token_bytes, a.logprob) for a in first[0].alternatives[:5]] == \
           [(a.token_bytes, a.logprob) for a in first[1].alternatives[:5]]


def test_a_sampled_token_outside_the_likeliest_is_still_listed_with_its_probability(model):
    service = ChatService(FixedWeights(model, STEP), TOKENIZER, torch.float32)
    wild = SamplingParams(max_new_tokens=12, temperature=100.0, seed=5, stop_at_eos=False)
    _, choices = reply(service, wild, alternatives=1)
    outside = [c for c in choices if c.alternatives[0].token_bytes != c.token_bytes]
    assert outside, "at temperature 100 some sampled token is not the likeliest"
    for choice in outside:
        assert len(choice.alternatives) == 2 and choice.alternatives[1].token_bytes == choice.token_bytes
        assert choice.alternatives[1].logprob == choice.logprob <= choice.alternatives[0].logprob


def test_a_reply_that_did_not_ask_computes_and_carries_no_probabilities(model, monkeypatch):
    softmaxes = []
    real = torch.log_softmax
    monkeypatch.setattr(torch, "log_softmax", lambda *a, **k: softmaxes.append(1) or real(*a, **k))
    service = ChatService(FixedWeights(model, STEP), TOKENIZER, torch.float32)
    text, choices = reply(service, GREEDY, alternatives=0)
    assert text and choices == [] and softmaxes == []


@pytest.mark.parametrize("bad", [-1, 21, 2.5, True, "5"])
def test_a_number_of_alternatives_out_of_range_is_refused_by_the_check_every_run_handle_makes(bad):
    with pytest.raises(UserError, match="alternatives must be a whole number from 0 to 20"):
        check_chat_request(PROMPT, GREEDY, bad)


def test_a_character_split_over_two_tokens_belongs_to_the_second():
    builder = ChoiceBuilder()
    snowman = "☃".encode()
    first = builder.choice(snowman[:2], -0.1, [])
    second = builder.choice(snowman[2:] + b"!", -0.2, [])
    assert (first.text, second.text) == ("", "☃!")
    assert first.name == "bytes:\\xe2\\x98" and first.alternatives[0].token_bytes == snowman[:2]


# ------------------------------------------------------------------ over HTTP
class ServedNano:
    """What a run's server needs of a run: the nano model answering chats."""

    trains = False
    tokenizer = TOKENIZER

    def __init__(self, model: Gemma3Model) -> None:
        self.model_config = model.cfg
        self._chat = ChatService(FixedWeights(model, STEP), TOKENIZER, torch.float32)

    def snapshot(self):
        return SimpleNamespace(step=STEP, version=1, run_id="nano", output_dir="")

    def subscribe(self, callback):
        return lambda: None

    def unsubscribe(self, callback) -> None:
        return None

    def chat(self, prompt, params, special_tokens=False, alternatives=0):
        return self._chat.chat(prompt, params, special_tokens, alternatives)

    def compute(self, pieces_of, per_turn=1):
        return self._chat.compute(pieces_of, per_turn)


@pytest.fixture(scope="module")
def server(model):
    served = RunServer(ServedNano(model), "nano", limits=Limits())
    served.start()
    yield served
    served.close()


@pytest.mark.parametrize("params", [SAMPLED, GREEDY], ids=["sampled", "greedy"])
def test_an_attached_studio_gets_the_same_probabilities_and_alternatives_as_the_runs_process(model, server, params):
    local_text, local = reply(ChatService(FixedWeights(model, STEP), TOKENIZER, torch.float32), params)
    job = RemoteChatJob(RunClient(server.url, server.token), PROMPT, params, alternatives=5)
    remote_text = "".join(job)
    assert job.error is None and job.step == STEP
    remote = job.take_tokens()
    assert remote_text == local_text and len(remote) == len(local) == params.max_new_tokens
    for theirs, ours in zip(remote, local):
        assert (theirs.text, theirs.token_bytes) == (ours.text, ours.token_bytes)
        assert theirs.probability == pytest.approx(ours.probability, abs=1e-6)
        assert [a.token_bytes for a in theirs.alternatives] == [a.token_bytes for a in ours.alternatives]
        assert [a.probability for a in theirs.alternatives] == pytest.approx(
            [a.probability for a in ours.alternatives], abs=1e-6)


def test_an_attached_reply_that_did_not_ask_carries_no_probabilities(server):
    job = RemoteChatJob(RunClient(server.url, server.token), PROMPT, GREEDY)
    assert "".join(job) and job.error is None and job.take_tokens() == []


def post_chat(server, body: dict) -> tuple[int, dict]:
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        connection.request("POST", "/api/chat", body=json.dumps(body).encode(),
                           headers={"Authorization": f"Bearer {server.token}"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("top", [21, -1, "5", True, 2.0])
def test_a_runs_server_refuses_a_top_logprobs_it_cannot_give_in_the_apis_shape(server, top):
    status, answer = post_chat(server, {"prompt": PROMPT, "params": {"max_new_tokens": 2}, "top_logprobs": top})
    assert status == 400
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["param"] == "top_logprobs" and "top_logprobs" in answer["error"]["message"]


@pytest.mark.parametrize("logprobs", [
    None, [], {"content": None}, {"content": [{"token": "a", "logprob": -1.0, "bytes": [97]}]},
    {"content": [{"token": "a", "logprob": "x", "bytes": [97], "top_logprobs": []}]},
    {"content": [{"token": "a", "logprob": -1.0, "bytes": [300], "top_logprobs": []}]},
    {"content": [{"token": "a", "logprob": 0.5, "bytes": [97], "top_logprobs": []}]},
    {"content": [{"token": "a", "logprob": -1.0, "bytes": [97], "top_logprobs": [{"token": "b"}]}]},
], ids=["null", "list", "no content", "no top", "text logprob", "not a byte", "above one", "bad alternative"])
def test_logprobs_a_server_sends_in_another_shape_are_not_read_as_probabilities(logprobs):
    assert choices_from_logprobs(logprobs, ChoiceBuilder()) is None
