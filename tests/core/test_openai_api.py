"""The OpenAI request rules: what a client may send, what is refused, and the plain chat layout."""

from __future__ import annotations

import pytest

from gemma_core.serve.openai_api import ApiError, Limits, parse_chat, parse_completion, render_conversation
from gemma_core.tokenizers.tokenizer import load_tokenizer

LIMITS = Limits(max_tokens=100)


def test_the_plain_layout_is_the_documented_one():
    prompt, special, stops, stop_ids = render_conversation(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hail."}, {"role": "user", "content": "Who art thou?"}],
        load_tokenizer("shakespeare-4k"))
    assert prompt == "Be brief.\n\nUser: Hi\n\nAssistant: Hail.\n\nUser: Who art thou?\n\nAssistant:"
    assert not special and stops == ("\nUser:",) and stop_ids == ()


@pytest.mark.parametrize("fields", [
    {"n": 1}, {"echo": False}, {"logprobs": None}, {"frequency_penalty": 0}, {"presence_penalty": 0.0},
    {"logit_bias": {}}, {"user": "me"}, {"stream_options": {"include_usage": True}, "stream": True},
    {"stop": ["\n", "END"]}, {"seed": 7}, {"top_p": 0.9}, {"temperature": 0},
    {"n": 3, "best_of": 3}, {"echo": True, "logprobs": 1, "max_tokens": 0}, {"logprobs": 20},
    {"frequency_penalty": -2, "presence_penalty": 2}, {"stop": ["a"] * 16}, {"prompt": ["a", "b"]},
    {"prompt": [1, 2, 3]}, {"prompt": [[1, 2], [3]]}, {"prompt": ["a", [1, 2]]},
])
def test_fields_a_client_sends_are_accepted(fields):
    parse_completion({"model": "m", "prompt": "x", **fields}, LIMITS)


@pytest.mark.parametrize("fields, message", [
    ({"n": 9}, "n must be between 1 and 8"), ({"n": True}, "n must be a whole number"),
    ({"logprobs": 21}, "logprobs must be between 0 and 20"), ({"echo": "yes"}, "echo must be true or false"),
    ({"frequency_penalty": 2.5}, "frequency_penalty"), ({"presence_penalty": "high"}, "presence_penalty"),
    ({"prompt": []}, "prompt must be"), ({"prompt": [[]]}, "prompt[0] is an empty list"),
    ({"prompt": [1.5]}, "prompt[0]"), ({"prompt": [["a"]]}, "prompt[0]"), ({"prompt": ["a"] * 300}, "at most 256"),
    ({"prompt": ["a"] * 100, "n": 3}, "split the batch"),
    ({"stop": ["a"] * 17}, "at most 16"), ({"stop": [""]}, "non-empty"),
    ({"max_tokens": 0}, "send echo: true with it to score the prompt"),
    ({"max_tokens": 101}, "between 0 and 100"), ({"temperature": 2.5}, "temperature"), ({"seed": -1}, "seed"),
    ({"top_p": 0}, "top_p must be above 0"), ({"stream": "yes"}, "stream"), ({"best_of": 3}, "best_of=3"),
    ({"frobnicate": 1}, "unknown field 'frobnicate'"), ({"model": ""}, "model is required"),
    ({"suffix": "tail"}, "suffix='tail' is not supported"),
])
def test_what_the_server_does_not_do_is_refused_not_ignored(fields, message):
    with pytest.raises(ApiError) as caught:
        parse_completion({"model": "m", "prompt": "x", **fields}, LIMITS)
    assert caught.value.status == 400 and message in caught.value.message


def test_chat_messages_are_checked_one_by_one():
    tokenizer = load_tokenizer("shakespeare-4k")
    request = parse_chat({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                                   {"type": "text", "text": "b"}]}]},
                         LIMITS, tokenizer)
    assert request.prompt == "User: ab\n\nAssistant:" and request.chat
    for messages, message in [([{"role": "user"}], "content must be text"),
                              ([{"role": "user", "content": [{"type": "image_url"}]}], "text parts only"),
                              ([{"role": "user", "content": "x", "mood": "grim"}], "unknown field 'mood'"),
                              (["hello"], "must be an object")]:
        with pytest.raises(ApiError, match=message):
            parse_chat({"model": "m", "messages": messages}, LIMITS, tokenizer)


@pytest.mark.parametrize("fields, message", [
    ({"max_tokens": 5, "max_completion_tokens": "many"}, "max_completion_tokens must be a whole number"),
    ({"max_tokens": 5, "max_completion_tokens": 0}, "max_completion_tokens must be between 1 and"),
    ({"top_logprobs": 2}, "top_logprobs needs logprobs: true"), ({"logprobs": 1}, "logprobs must be true or false"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
    ({"max_tokens": 5, "max_completion_tokens": 7}, "disagree"),
    ({"max_tokens": "x", "max_completion_tokens": 7}, "max_tokens must be a whole number"),
    ({"stream_options": {"include_usage": True}}, "stream: true"),
    ({"stream": False, "stream_options": {"include_usage": False}}, "stream: true"),
])
def test_a_field_beside_one_that_would_shadow_it_is_checked_not_ignored(fields, message):
    with pytest.raises(ApiError) as caught:
        parse_chat({"model": "m", "messages": [{"role": "user", "content": "x"}], **fields}, LIMITS,
                   load_tokenizer("shakespeare-4k"))
    assert caught.value.status == 400 and message in caught.value.message


def test_max_tokens_and_max_completion_tokens_may_agree():
    request = parse_chat({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 9,
                          "max_completion_tokens": 9}, LIMITS, load_tokenizer("shakespeare-4k"))
    assert request.max_tokens == 9
