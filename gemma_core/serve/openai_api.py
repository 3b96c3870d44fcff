"""The OpenAI API's completions and chat completions, as far as a language model in training
can answer them: every request field checked, responses and stream chunks shaped as the
official client expects (``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``).

Chat messages become one prompt through the model's own chat template where it has one
(an imported instruction-tuned Gemma), else through this plain layout, documented in the
README, which a pretrained model continues naturally::

    {system messages, if any}

    User: {message}

    Assistant: {reply}

    User: {message}

    Assistant:

and the reply ends where the model starts a new ``User:`` turn.
"""

from __future__ import annotations

import json
import math
import reprlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gemma_core.model.sampling import MAX_SEED
from gemma_core.model.token_choices import chat_logprobs_entry, token_name

MAX_STOP_STRINGS = 16  # lm-evaluation-harness adds the EOS text to a task's own stop strings
MAX_LOGPROBS = 20  # alternatives per token, as vLLM's default bound
MAX_CHOICES = 8  # n: continuations of one prompt
MAX_PROMPTS = 256  # prompts in one completions request
MAX_DIGITS = 40  # no field takes a longer whole number (a seed is below 2**64: 20 digits)
MAX_DEPTH = 32  # a chat request nests 5 deep; a body nested deeper is not a request
PLAIN_USER, PLAIN_ASSISTANT = "User:", "Assistant:"
# Tokens that end a chat turn in common chat templates (Gemma's first).
TURN_ENDS = ("<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>")


class ApiError(Exception):
    """A request the API refuses: an HTTP status and OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    max_tokens: int = 2048  # the most a single request may ask for (the context bounds it too)
    max_body_bytes: int = 1 << 20
    # Requests being answered at once; more wait their turn, first come first served, and
    # past max_waiting they are refused with 429 and Retry-After. An evaluation harness
    # with 8 concurrent clients is all answered.
    max_generations: int = 8
    max_waiting: int = 64


@dataclass(frozen=True)
class GenerationRequest:
    """What both endpoints ask for, once checked."""

    model: str
    prompts: tuple  # each text, or a tuple of token ids used as they are; chat: the rendered conversation
    max_tokens: int | None  # None: as many as the context leaves (up to Limits.max_tokens)
    temperature: float
    top_p: float | None
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool
    chat: bool
    special_tokens: bool = False  # the prompt holds a chat template's special-token text
    stop_token_ids: tuple[int, ...] = ()
    n: int = 1  # continuations of each prompt
    echo: bool = False  # completions: the prompt comes back before its continuation
    logprobs: int | None = None  # alternatives per token to report; None: no log-probabilities
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @property
    def prompt(self):
        return self.prompts[0]

    @property
    def choices(self) -> int:
        return len(self.prompts) * self.n


# ------------------------------------------------------------------ bodies
def parse_body(raw: bytes) -> Any:
    """A request body as strict JSON: UTF-8 text holding valid Unicode, no NaN or Infinity,
    no key twice in an object, no whole number over ``MAX_DIGITS`` digits and no nesting
    deeper than ``MAX_DEPTH``. Anything else is a 400 naming what is wrong, never a 500."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(400, f"the request body is not UTF-8 (byte {err.start:,} is not); "
                            "send JSON as UTF-8") from None
    try:
        body = json.loads(text, parse_int=_whole_number, object_pairs_hook=_object)
    except json.JSONDecodeError as err:
        raise ApiError(400, f"the request body is not valid JSON ({err})") from None
    except RecursionError:
        raise ApiError(400, f"the request body is nested more than {MAX_DEPTH} deep") from None
    _check_values(body)
    return body


class _TooManyDigits:
    """A whole number too long to convert (Python refuses over 4,300 digits, and slowly): its
    field is named once the body's shape is known."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _whole_number(text: str) -> int | _TooManyDigits:
    digits = len(text.lstrip("-"))
    return int(text) if digits <= MAX_DIGITS else _TooManyDigits(digits)


def _object(pairs: list[tuple[str, Any]]) -> dict:
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise ApiError(400, f"the field {_shown(key)} appears twice in one object; send it once", key)
        found[key] = value
    return found


def _check_values(body: Any) -> None:
    """Nesting within ``MAX_DEPTH``, numbers finite and of at most ``MAX_DIGITS`` digits, and
    every text (keys too) valid Unicode: JSON's escapes can spell a lone surrogate, which no
    tokenizer or encoder takes."""
    pending = [(body, "the request body", None, 0)]
    while pending:
        value, where, field, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise ApiError(400, f"the request body is nested more than {MAX_DEPTH} deep", field)
        if isinstance(value, str):
            _check_text(value, where, field)
        elif isinstance(value, float) and not math.isfinite(value):  # NaN, Infinity, 1e400
            raise ApiError(400, f"{where} must be a finite number, got {value}", field)
        elif isinstance(value, _TooManyDigits):
            raise ApiError(400, f"{where} has {value.digits:,} digits; no field takes more than {MAX_DIGITS}",
                           field)
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{i}]", field, depth + 1) for i, item in enumerate(value))
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, f"a field name in {where}", field)
                top = field if field is not None else key
                name = key if depth == 0 else f"{where}.{key}"
                pending.append((item, name, top, depth + 1))


def _check_text(text: str, where: str, field: str | None) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ApiError(400, f"{where} is not valid Unicode (character {err.start:,} is a lone surrogate, "
                            f"\\u{ord(text[err.start]):04x}); send valid text", field) from None


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = _repr.maxlong = 60


def _shown(value: Any) -> str:
    """A value a client sent, as an error message quotes it: short, whatever its size."""
    return _repr.repr(value)


# --------------------------------------------------------------- fields
# Fields a client may send that this server does not implement, with the values that mean
# "not used": anything else is refused rather than silently ignored.
_NEUTRAL: dict[str, tuple] = {
    "logit_bias": ({},), "suffix": ("",),
    "response_format": ({"type": "text"},), "tools": ([],), "tool_choice": ("none",), "functions": ([],),
    "function_call": ("none",), "parallel_tool_calls": (False,), "service_tier": ("auto", "default"),
    "store": (False,),
}
_FREE = {"user", "metadata"}  # accepted and not used


def _is_neutral(key: str, value: Any) -> bool:
    # ``True == 1``: a boolean is neutral only where a boolean is expected, and the reverse.
    return value is None or any(value == v and isinstance(value, bool) == isinstance(v, bool)
                                for v in _NEUTRAL[key])


def _check_fields(body: dict, known: set[str]) -> None:
    for key, value in body.items():
        if key in known or key in _FREE:
            continue
        if key not in _NEUTRAL:
            raise ApiError(400, f"unknown field {_shown(key)}", key)
        if not _is_neutral(key, value):
            raise ApiError(400, f"{key}={_shown(value)} is not supported by this server", key)


def _number(body: dict, key: str, default: float | None, low: float, high: float) -> float | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{key} must be a number, got {_shown(value)}", key)
    if not low <= value <= high:
        raise ApiError(400, f"{key} must be between {low:g} and {high:g}, got {_shown(value)}", key)
    return float(value)


def _integer(body: dict, key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{key} must be a whole number, got {_shown(value)}", key)
    if not low <= value <= high:
        raise ApiError(400, f"{key} must be between {low} and {high}, got {value}", key)
    return value


def _common(body: Any, limits: Limits, fewest_tokens: int) -> dict:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required (GET /v1/models lists it)", "model")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,) if stop else ()
    elif isinstance(stop, list) and all(isinstance(s, str) and s for s in stop) and len(stop) <= MAX_STOP_STRINGS:
        stops = tuple(dict.fromkeys(stop))
    else:
        raise ApiError(400, f"stop must be a string or a list of at most {MAX_STOP_STRINGS} non-empty strings",
                       "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"stream must be true or false, got {_shown(stream)}", "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}
                                or not isinstance(options.get("include_usage", False), bool)):
        raise ApiError(400, "stream_options takes only include_usage (true or false)", "stream_options")
    if options is not None and not stream:
        raise ApiError(400, "stream_options is for streamed replies only; send it with stream: true",
                       "stream_options")
    max_tokens = _max_tokens(body, limits, fewest_tokens)
    n = _integer(body, "n", 1, MAX_CHOICES) or 1
    best_of = _integer(body, "best_of", 1, MAX_CHOICES)
    if best_of is not None and best_of != n:
        raise ApiError(400, f"best_of={best_of} is not supported: every continuation asked for is returned "
                            f"(n={n}); send best_of equal to n or leave it out", "best_of")
    return dict(model=model, max_tokens=max_tokens, temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                top_p=_number(body, "top_p", None, 0.0, 1.0), stop=stops, seed=_integer(body, "seed", 0, MAX_SEED),
                stream=stream, include_usage=bool(options and options.get("include_usage")), n=n,
                frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
                presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0))


def _max_tokens(body: dict, limits: Limits, fewest: int) -> int | None:
    """``max_tokens``, or its newer name ``max_completion_tokens``: each checked, and both only
    when they agree (neither may silently override the other). ``fewest`` is 0 where a
    prompt may be scored without a continuation (completions with ``echo``)."""
    old = _integer(body, "max_tokens", fewest, limits.max_tokens)
    new = _integer(body, "max_completion_tokens", fewest, limits.max_tokens)
    if old is not None and new is not None and old != new:
        raise ApiError(400, f"max_tokens ({old}) and max_completion_tokens ({new}) disagree; send one of them",
                       "max_completion_tokens")
    return new if old is None else old


_COMMON = {"model", "max_tokens", "temperature", "top_p", "stop", "seed", "stream", "stream_options", "n",
           "best_of", "frequency_penalty", "presence_penalty"}


def parse_completion(body: Any, limits: Limits) -> GenerationRequest:
    values = _common(body, limits, fewest_tokens=0)
    _check_fields(body, _COMMON | {"prompt", "echo", "logprobs"})
    prompts = _prompts(body.get("prompt"))
    echo = body.get("echo", False)
    if echo is None:
        echo = False
    if not isinstance(echo, bool):
        raise ApiError(400, f"echo must be true or false, got {_shown(echo)}", "echo")
    logprobs = body.get("logprobs")
    if isinstance(logprobs, bool):  # the chat endpoint's form, sent here by some clients
        logprobs = 0 if logprobs else None
    if logprobs is not None:
        logprobs = _integer(body | {"logprobs": logprobs}, "logprobs", 0, MAX_LOGPROBS)
    if values["max_tokens"] == 0 and not echo:
        raise ApiError(400, "max_tokens 0 writes nothing; send echo: true with it to score the prompt",
                       "max_tokens")
    if len(prompts) * values["n"] > MAX_PROMPTS:
        raise ApiError(400, f"{len(prompts)} prompts x n={values['n']} is more than the {MAX_PROMPTS} choices "
                            "one request may ask for; split the batch", "prompt")
    if values["top_p"] == 0.0:
        raise ApiError(400, "top_p must be above 0", "top_p")
    return GenerationRequest(prompts=prompts, chat=False, echo=echo, logprobs=logprobs, **values)


def _prompts(prompt: Any) -> tuple:
    """OpenAI's four forms of ``prompt``: a string, a list of strings, a list of token ids, or
    a list of lists of token ids; one prompt per choice, in order."""
    shape = "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids"
    if isinstance(prompt, str):
        return (prompt,)
    if not isinstance(prompt, list) or not prompt:
        raise ApiError(400, shape, "prompt")
    if all(_is_token_id(t) for t in prompt):
        return (tuple(prompt),)
    if len(prompt) > MAX_PROMPTS:
        raise ApiError(400, f"prompt holds {len(prompt):,} prompts; at most {MAX_PROMPTS} per request", "prompt")
    prompts = []
    for i, item in enumerate(prompt):
        if isinstance(item, str):
            prompts.append(item)
        elif isinstance(item, list) and item and all(_is_token_id(t) for t in item):
            prompts.append(tuple(item))
        elif isinstance(item, list) and not item:
            raise ApiError(400, f"prompt[{i}] is an empty list of token ids", "prompt")
        else:
            raise ApiError(400, f"prompt[{i}]: {shape}", "prompt")
    return tuple(prompts)


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_chat(body: Any, limits: Limits, tokenizer) -> GenerationRequest:
    values = _common(body, limits, fewest_tokens=1)
    _check_fields(body, _COMMON | {"messages", "max_completion_tokens", "logprobs", "top_logprobs"})
    logprobs = _chat_logprobs(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", "messages")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiError(400, f"messages[{i}] must be an object", "messages")
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, f"messages[{i}].role {_shown(role)} is not supported (system, user, assistant)",
                           "messages")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ApiError(400, f"messages[{i}].content may hold text parts only", "messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be text", "messages")
        unknown = set(message) - {"role", "content", "name"}
        if unknown:
            raise ApiError(400, f"messages[{i}] has an unknown field {_shown(sorted(unknown)[0])}", "messages")
        turns.append({"role": "system" if role == "developer" else role, "content": content})
    if values["top_p"] == 0.0:
        raise ApiError(400, "top_p must be above 0", "top_p")
    prompt, special, stops, stop_ids = render_conversation(turns, tokenizer)
    values["stop"] = tuple(dict.fromkeys(values["stop"] + stops))  # the user's, and the layout's own
    return GenerationRequest(prompts=(prompt,), chat=True, special_tokens=special, stop_token_ids=stop_ids,
                             logprobs=logprobs, **values)


def top_logprobs_field(body: dict) -> int:
    """/api/chat's ``top_logprobs`` (0-20, 0 when absent): each token's probability and that
    many alternatives come with the text."""
    return _integer(body, "top_logprobs", 0, MAX_LOGPROBS) or 0


def _chat_logprobs(body: dict) -> int | None:
    """Chat's form: ``logprobs`` true/false, and ``top_logprobs`` alternatives (0-20) with it."""
    wanted = body.get("logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise ApiError(400, f"logprobs must be true or false, got {_shown(wanted)}", "logprobs")
    top = _integer(body, "top_logprobs", 0, MAX_LOGPROBS)
    if top and not wanted:
        raise ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs")
    return (top or 0) if wanted else None


# ------------------------------------------------------------ conversations
def render_conversation(turns: list[dict], tokenizer) -> tuple[str, bool, tuple[str, ...], tuple[int, ...]]:
    """(prompt, holds special tokens, extra stop strings, extra stop token ids) for a chat."""
    template = getattr(tokenizer, "chat_template", None)
    if template:
        return _render_template(template, turns, tokenizer)
    system = "\n\n".join(t["content"] for t in turns if t["role"] == "system")
    parts = [system] if system else []
    for turn in turns:
        if turn["role"] == "user":
            parts.append(f"{PLAIN_USER} {turn['content']}")
        elif turn["role"] == "assistant":
            parts.append(f"{PLAIN_ASSISTANT} {turn['content']}")
    return "\n\n".join(parts) + f"\n\n{PLAIN_ASSISTANT}", False, (f"\n{PLAIN_USER}",), ()


def _render_template(template: str, turns: list[dict], tokenizer) -> tuple[str, bool, tuple[str, ...],
                                                                         tuple[int, ...]]:
    # A template comes with downloaded weights: render it sandboxed, as transformers does.
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise ApiError(400, f"the model's chat template refused the conversation: {message}", "messages")

    def special_text(token_id: int | None) -> str:
        if token_id is None:
            return ""
        try:
            return tokenizer.token_bytes(token_id).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            return ""

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
    environment.globals["raise_exception"] = raise_exception
    try:
        prompt = environment.from_string(template).render(
            messages=turns, add_generation_prompt=True, bos_token=special_text(tokenizer.bos_id),
            eos_token=special_text(tokenizer.eos_id))
    except ApiError:
        raise
    except jinja2.TemplateError as err:
        raise ApiError(400, f"the model's chat template failed on this conversation ({err})", "messages") from None
    specials = getattr(tokenizer.encoding, "_special_tokens", {})
    stop_ids = tuple(specials[t] for t in TURN_ENDS if t in specials)
    return prompt, True, (), stop_ids


# ------------------------------------------------------------ responses
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def finish_reason(reason: str | None) -> str:
    return "stop" if reason == "stop" else "length"


@dataclass
class Choice:
    """One choice of a whole (not streamed) response, gathered from its pieces."""

    index: int
    text: str
    tokens: list  # of completion_work.TokenLogprob
    finish_reason: str | None


def response(request: GenerationRequest, response_id: str, model: str, choices: list[Choice],
             prompt_tokens: int, completion_tokens: int) -> dict:
    created = int(time.time())
    shaped = [_choice(request, c.index, c.text, c.tokens, finish_reason(c.finish_reason), whole=True)
              for c in choices]
    kind = "chat.completion" if request.chat else "text_completion"
    return {"id": response_id, "object": kind, "created": created, "model": model, "choices": shaped,
            "usage": usage(prompt_tokens, completion_tokens)}


def chunk(request: GenerationRequest, response_id: str, model: str, index: int = 0, text: str | None = None,
          tokens: list | None = None, reason: str | None = None, first: bool = False,
          usage_counts: dict | None = None) -> dict:
    """One server-sent event's worth of a streamed reply; ``usage_counts`` makes the final
    usage chunk (no choices), as ``stream_options.include_usage`` asks."""
    created = int(time.time())
    kind = "chat.completion.chunk" if request.chat else "text_completion"
    if usage_counts is not None:
        return {"id": response_id, "object": kind, "created": created, "model": model, "choices": [],
                "usage": usage_counts}
    choice = _choice(request, index, text or "", tokens or [], finish_reason(reason) if reason else None,
                     whole=False, first=first)
    return {"id": response_id, "object": kind, "created": created, "model": model, "choices": [choice]}


def _choice(request: GenerationRequest, index: int, text: str, tokens: list, reason: str | None, whole: bool,
            first: bool = False) -> dict:
    logprobs = None
    if request.logprobs is not None:
        logprobs = chat_logprobs(tokens, request.logprobs) if request.chat else legacy_logprobs(tokens)
    if not request.chat:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}
    if whole:
        return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                "finish_reason": reason}
    delta: dict = {"role": "assistant", "content": ""} if first else {}
    if text:
        delta["content"] = text
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}


def legacy_logprobs(tokens: list) -> dict:
    """The completions endpoint's shape: parallel lists, and a dict of alternatives per token
    (null for an echoed prompt's first token, which nothing predicts)."""
    return {"tokens": [token_name(t.token) for t in tokens],
            "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [None if t.top is None else {token_name(b): lp for b, lp in t.top} for t in tokens],
            "text_offset": [t.offset for t in tokens]}


def chat_logprobs(tokens: list, top_n: int) -> dict:
    """The chat endpoint's shape: one entry per token, with its bytes and exactly ``top_n``
    alternatives (the chosen token is among them only if it is among the likeliest)."""
    return {"content": [chat_logprobs_entry(t.token, t.logprob, t.top or [], top_n) for t in tokens]}
