"""What evaluation harnesses and batch clients send a served model: prompts as text or token ids
and in batches, echo with log-probabilities, several choices, penalties, the tokenizer's routes,
and eight clients at once. Checked with the real clients (openai, lm-evaluation-harness) and
against the model's own numbers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from gemma_core.model.generation import SamplingParams, generate_tokens, penalised
from gemma_core.model.model import Gemma3Model
from gemma_core.model.presets import get_preset
from gemma_core.run.model_dir import load_model_dir, save_model_dir
from gemma_core.run.viewer import RunViewer
from gemma_core.serve.openai_api import Limits
from gemma_core.serve.server import RunServer
from gemma_core.tokenizers.tokenizer import load_tokenizer
from tests.end_to_end.test_run_service import wait_until

openai = pytest.importorskip("openai")

KEY = "evaluation-key-0123456789"
TASK = Path(__file__).parent / "lm_eval_task"


def nano_checkpoint(folder: Path) -> Path:
    """The nano preset's architecture with weights drawn wide enough to have opinions."""
    torch.manual_seed(3)
    model = Gemma3Model(get_preset("nano").model_config())
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    save_model_dir(folder, model, load_tokenizer("shakespeare-4k"), extra={"training": {"dtype": "fp32"}})
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return nano_checkpoint(tmp_path_factory.mktemp("scored") / "nano")


@pytest.fixture(scope="module")
def served(checkpoint):
    server = RunServer(RunViewer(checkpoint, device="cpu", dtype="fp32"), "nano", token=KEY,
                       limits=Limits(max_tokens=64))
    url = server.start()
    try:
        yield server, url
    finally:
        server.close()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[1] + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def model(checkpoint):
    loaded, tokenizer, _ = load_model_dir(checkpoint, "cpu")
    return loaded.eval(), tokenizer


def own_logprobs(model: Gemma3Model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).float()[0], dim=-1)


# ------------------------------------------------------------------ scoring
def test_echo_with_logprobs_scores_every_prompt_token_in_openais_legacy_shape(client, model):
    net, tokenizer = model
    prompt = "To be, or not to be, that is the question"
    ids = tokenizer.encode(prompt)
    reply = client.completions.create(model="nano", prompt=prompt, echo=True, logprobs=3, max_tokens=1,
                                      temperature=0)
    choice = reply.choices[0]
    logprobs = choice.logprobs
    expected = own_logprobs(net, ids)
    assert logprobs.tokens[:len(ids)] == [tokenizer.decode([t]) for t in ids] and len(logprobs.tokens) == len(ids) + 1
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    for i in range(1, len(ids)):
        assert logprobs.token_logprobs[i] == pytest.approx(expected[i - 1, ids[i]].item(), abs=1e-4)
        best = max(logprobs.top_logprobs[i].values())
        assert best == pytest.approx(expected[i - 1].max().item(), abs=1e-4)
        assert logprobs.tokens[i] in logprobs.top_logprobs[i]  # the scored token is always among them
    # The one new token is the greedy one, scored like the rest, and its text follows the prompt.
    greedy = int(expected[-1].argmax())
    assert logprobs.tokens[-1] == tokenizer.decode([greedy])
    assert choice.text == prompt + tokenizer.decode([greedy])
    assert logprobs.text_offset == [len(tokenizer.decode(ids[:i])) for i in range(len(ids) + 1)]
    assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens == 1


def test_max_tokens_zero_with_echo_scores_without_writing(client, model):
    net, tokenizer = model
    ids = tokenizer.encode("Now is the winter")
    reply = client.completions.create(model="nano", prompt=ids, echo=True, logprobs=0, max_tokens=0)
    choice = reply.choices[0]
    assert choice.text == "Now is the winter" and choice.finish_reason == "length"
    assert len(choice.logprobs.tokens) == len(ids) and reply.usage.completion_tokens == 0
    expected = own_logprobs(net, ids)
    assert choice.logprobs.token_logprobs[1:] == pytest.approx(
        [expected[i - 1, ids[i]].item() for i in range(1, len(ids))], abs=1e-4)
    with pytest.raises(openai.BadRequestError, match="echo: true"):
        client.completions.create(model="nano", prompt="x", max_tokens=0)


def test_a_batch_in_any_of_the_four_prompt_forms_answers_one_choice_per_prompt_in_order(client, model):
    _, tokenizer = model
    texts = ["All the world's a", "A horse! a horse!", "Good night"]
    alone = [client.completions.create(model="nano", prompt=t, max_tokens=4, temperature=0).choices[0].text
             for t in texts]
    for prompt in (texts, [tokenizer.encode(t) for t in texts], [texts[0], tokenizer.encode(texts[1]), texts[2]]):
        reply = client.completions.create(model="nano", prompt=prompt, max_tokens=4, temperature=0)
        assert [c.index for c in reply.choices] == [0, 1, 2]
        assert [c.text for c in reply.choices] == alone
    ids = client.completions.create(model="nano", prompt=tokenizer.encode(texts[0]), max_tokens=4, temperature=0)
    assert ids.choices[0].text == alone[0]


def test_scores_in_a_batch_equal_scores_alone(client):
    prompts = ["Friends, Romans, countrymen", "O", "Shall I compare thee to a summer's day? Thou art more"]
    together = client.completions.create(model="nano", prompt=prompts, echo=True, logprobs=1, max_tokens=1,
                                         temperature=0)
    for i, prompt in enumerate(prompts):
        alone = client.completions.create(model="nano", prompt=prompt, echo=True, logprobs=1, max_tokens=1,
                                          temperature=0).choices[0]
        assert together.choices[i].logprobs.token_logprobs[1:] == pytest.approx(alone.logprobs.token_logprobs[1:],
                                                                                abs=1e-4)
        assert together.choices[i].text == alone.text


def test_n_choices_come_per_prompt_with_their_own_index(client):
    reply = client.completions.create(model="nano", prompt=["a", "b"], n=3, max_tokens=3, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3, 4, 5]
    assert len({c.text for c in reply.choices[:3]}) == 1  # greedy: the same three times
    sampled = client.completions.create(model="nano", prompt="The", n=4, max_tokens=8, temperature=1.0, seed=11)
    assert len({c.text for c in sampled.choices}) > 1  # each sampled with its own seed
    again = client.completions.create(model="nano", prompt="The", n=4, max_tokens=8, temperature=1.0, seed=11)
    assert [c.text for c in again.choices] == [c.text for c in sampled.choices]
    with pytest.raises(openai.BadRequestError, match="best_of"):
        client.completions.create(model="nano", prompt="x", n=2, best_of=3)


def test_many_stop_strings_are_honoured(client, model):
    _, tokenizer = model
    free = client.completions.create(model="nano", prompt="The king", max_tokens=12, temperature=0).choices[0].text
    stops = [f"never-{i}" for i in range(15)] + [free[3:5]]
    reply = client.completions.create(model="nano", prompt="The king", max_tokens=12, temperature=0, stop=stops)
    assert reply.choices[0].text == free[:free.index(free[3:5])] and reply.choices[0].finish_reason == "stop"


def test_generated_tokens_carry_logprobs_that_match_the_model(client, model):
    net, tokenizer = model
    reply = client.completions.create(model="nano", prompt="Enter the", max_tokens=6, temperature=0, logprobs=2)
    choice = reply.choices[0]
    ids = tokenizer.encode("Enter the")
    generated = list(generate_tokens(net, ids, SamplingParams(max_new_tokens=6, temperature=0, stop_at_eos=False)))
    assert choice.logprobs.tokens == [tokenizer.decode([t]) for t in generated]
    expected = own_logprobs(net, ids + generated)
    for i, token in enumerate(generated):
        assert choice.logprobs.token_logprobs[i] == pytest.approx(expected[len(ids) - 1 + i, token].item(), abs=1e-4)
        assert len(choice.logprobs.top_logprobs[i]) == 2
    assert "".join(choice.logprobs.tokens) == choice.text


def test_chat_reports_logprobs_and_exactly_top_logprobs_alternatives(client):
    reply = client.chat.completions.create(model="nano", messages=[{"role": "user", "content": "Who art thou?"}],
                                           max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert 1 <= len(content) <= 5 and all(len(entry.top_logprobs) == 3 for entry in content)
    assert "".join(entry.token for entry in content).startswith(reply.choices[0].message.content)
    assert all(bytes(entry.bytes).decode("utf-8", "replace") == entry.token for entry in content)
    plain = client.chat.completions.create(model="nano", messages=[{"role": "user", "content": "Who art thou?"}],
                                           max_tokens=5, temperature=0)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == reply.choices[0].message.content


def test_penalties_lower_the_logits_of_tokens_already_written():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0]])
    counts = torch.tensor([3.0, 0.0, 1.0, 0.0])
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=0.25)
    assert penalised(logits, counts, params).tolist() == [[2.0 - 1.5 - 0.25, 1.0, 0.5 - 0.5 - 0.25, 0.0]]


def test_a_presence_penalty_changes_a_greedy_reply_that_repeats_itself(client, model):
    net, tokenizer = model
    prompt = "the the the the"
    plain = client.completions.create(model="nano", prompt=prompt, max_tokens=24, temperature=0).choices[0].text
    ids = tokenizer.encode(prompt)
    written = list(generate_tokens(net, ids, SamplingParams(max_new_tokens=24, temperature=0, stop_at_eos=False)))
    assert len(set(written)) < len(written)  # this model repeats itself here
    penalised_reply = client.completions.create(model="nano", prompt=prompt, max_tokens=24, temperature=0,
                                                presence_penalty=2.0, frequency_penalty=2.0).choices[0].text
    params = SamplingParams(max_new_tokens=24, temperature=0, presence_penalty=2.0, frequency_penalty=2.0,
                            stop_at_eos=False)
    own = tokenizer.decode(generate_tokens(net, ids, params))
    assert penalised_reply != plain and penalised_reply == own


# ------------------------------------------------------------ models, tokens
def test_a_client_retrieves_the_served_model_by_name(client):
    assert client.models.retrieve("nano").id.startswith("nano@step-")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_the_tokenizer_routes_answer_as_vllms_do(served, model):
    _, tokenizer = model
    import requests

    headers = {"Authorization": f"Bearer {KEY}"}
    info = requests.get(served[1] + "/tokenizer_info", headers=headers, timeout=30).json()
    assert info["eos_token"] == "<|endoftext|>" and info["bos_token"] is None
    text = "Hamlet: <|endoftext|> is text here"
    tokens = requests.post(served[1] + "/tokenize", json={"prompt": text, "add_special_tokens": False},
                           headers=headers, timeout=30).json()["tokens"]
    assert tokens == tokenizer.encode(text) and tokenizer.eos_id not in tokens
    eos = requests.post(served[1] + "/tokenize", json={"prompt": "<|endoftext|>"}, headers=headers, timeout=30)
    assert eos.json()["tokens"] == [tokenizer.eos_id]
    back = requests.post(served[1] + "/detokenize", json={"tokens": tokens}, headers=headers, timeout=30).json()
    assert back["prompt"] == text
    refused = requests.post(served[1] + "/detokenize", json={"tokens": [10 ** 9]}, headers=headers, timeout=30)
    assert refused.status_code == 400 and "token ids" in refused.json()["error"]["message"]
    assert requests.get(served[1] + "/tokenizer_info", timeout=30).status_code == 401


def test_token_ids_outside_the_vocabulary_are_refused_naming_the_prompt(client):
    with pytest.raises(openai.BadRequestError, match=r"prompt\[1\] holds token id 99999"):
        client.completions.create(model="nano", prompt=[[1, 2], [3, 99999]], max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model="nano", prompt=[5] * 300, max_tokens=1)


def test_eight_clients_at_once_are_all_answered(served):
    client = openai.OpenAI(base_url=served[1] + "/v1", api_key=KEY, max_retries=0)
    outcomes: list = []

    def ask(i: int) -> None:
        for _ in range(3):
            reply = client.completions.create(model="nano", prompt=[f"line {i}", "and"], echo=True, logprobs=1,
                                              max_tokens=1, temperature=0)
            outcomes.append(len(reply.choices))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert outcomes == [2] * 24  # no 429: the ninth and later wait their turn


def test_past_the_waiting_room_requests_are_refused_with_retry_after(checkpoint):
    server = RunServer(RunViewer(checkpoint, device="cpu", dtype="fp32"), "nano", token=KEY,
                       limits=Limits(max_tokens=64, max_generations=1, max_waiting=1))
    url = server.start()
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        statuses: list = []

        def ask() -> None:
            try:
                client.completions.create(model="nano", prompt="x", max_tokens=64, temperature=0)
                statuses.append(200)
            except openai.RateLimitError as err:
                assert err.response.headers["Retry-After"] == "1"
                statuses.append(429)

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert sorted(statuses)[0] == 200 and 429 in statuses and len(statuses) == 6
    finally:
        server.close()


# ------------------------------------------------------------- lm-eval
class LmEval:
    """The lm_eval command on our small multiple-choice task, running in the background."""

    def __init__(self, tmp: Path, name: str, model_args: list[str], env: dict) -> None:
        tasks = tmp / "tasks"
        tasks.mkdir(exist_ok=True)
        (tasks / "gemma_studio_mc.yaml").write_text(
            (TASK / "gemma_studio_mc.yaml").read_text().replace("QUESTIONS_JSONL", str(TASK / "questions.jsonl")))
        self.out = tmp / name
        self.process = subprocess.Popen(
            [shutil.which("lm_eval") or "lm_eval", *model_args, "--tasks", "gemma_studio_mc", "--include_path",
             str(tasks), "--output_path", str(self.out), "--log_samples"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)

    def results(self) -> dict:
        _, stderr = self.process.communicate(timeout=600)
        assert self.process.returncode == 0, stderr[-3000:]
        results = json.loads(next(self.out.rglob("results_*.json")).read_text())["results"]["gemma_studio_mc"]
        samples = [json.loads(line) for line in next(self.out.rglob("samples_*.jsonl")).read_text().splitlines()]
        return {"acc": results["acc,none"], "acc_norm": results["acc_norm,none"],
                "loglikelihoods": {(s["doc_id"], i): float(r[0][0])
                                   for s in samples for i, r in enumerate(s["resps"])}}


def test_lm_eval_scores_the_served_model_exactly_as_it_scores_the_exported_one(tmp_path, checkpoint):
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    from gemma_core.hf.exporter import export_hf

    export_hf(checkpoint, tmp_path / "hf")
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", OPENAI_API_KEY=KEY,
               TOKENIZERS_PARALLELISM="false")
    exported = LmEval(tmp_path, "hf", ["--model", "hf", "--model_args",
                                       f"pretrained={tmp_path / 'hf'},dtype=float32", "--device", "cpu"], env)
    serve = subprocess.Popen([sys.executable, "-m", "gemma_core", "serve", "--checkpoint", str(checkpoint),
                              "--port", "0", "--dtype", "fp32", "--device", "cpu", "--api-key", KEY],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")), daemon=True)
        reader.start()
        wait_until(lambda: any(" on http://" in line for line in lines), 120, "gemma-core serve to listen")
        url = next(line for line in lines if " on http://" in line).split(" on ")[-1].strip()
        served = LmEval(tmp_path, "served", [
            "--model", "local-completions", "--model_args",
            f"model=nano,base_url={url}/completions,num_concurrent=8,auth_token={KEY}", "--batch_size", "4"],
            env).results()
    finally:
        serve.terminate()
        serve.wait(60)
    exported = exported.results()
    assert served["acc"] == exported["acc"] and served["acc_norm"] == exported["acc_norm"]
    assert served["loglikelihoods"].keys() == exported["loglikelihoods"].keys()
    for key, value in served["loglikelihoods"].items():
        assert value == pytest.approx(exported["loglikelihoods"][key], abs=1e-4), key
