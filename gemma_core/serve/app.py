"""The HTTP face of a run: its snapshots, events, commands and chat for attached clients, and
the OpenAI API for any client, on aiohttp.

    GET  /api/run                     what is served: name, id, model config, process
    GET  /api/snapshot?after=V&wait=S the run's snapshot, once newer than version V (long poll)
    GET  /api/telemetry               this machine's GPU (or CPU and RAM) reading
    POST /api/commands/NAME           pause, unpause, save, eval, stop, abort: waits for the outcome
    POST /api/chat                    a reply from the current weights, streamed (server-sent events;
                                      top_logprobs: each token's probability and alternatives)
    POST /api/inspect                 one prompt's pass on the current weights, looked inside (gemma_core.inspect)
    GET  /v1/models                   \\
    GET  /v1/models/{id}               |
    POST /v1/completions               } the OpenAI API (completions: echo and logprobs
    POST /v1/chat/completions         /   for scoring, as evaluation harnesses use them)
    GET  /tokenizer_info              \\
    POST /tokenize                     } the model's tokenizer, as vLLM serves it
    POST /detokenize                  /

Every request needs the run's token as a bearer token (compared in constant time), checked
before its body is read. Bodies are bounded and never inflated (a compressed one is refused
with 415), their JSON is strict (see ``openai_api.parse_body``), replies in flight are
bounded (more wait their turn, and past a bound are refused with 429 and Retry-After),
connections are capped (see ``connections``), and no request can reach anything but this
one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import os
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from aiohttp import web

from gemma_core.chat import ChatJob
from gemma_core.errors import OneLineError, internal_message
from gemma_core.model.sampling import SamplingParams
from gemma_core.model.token_choices import logprobs_entry
from gemma_core.serve import openai_api
from gemma_core.serve.connections import answering_with_key
from gemma_core.serve.openai_api import ApiError, GenerationRequest, Limits
from gemma_core.serve.wire import to_wire
from gemma_core.run.events import RunSnapshot
from gemma_core.run.handle import LocalRun
from gemma_core.serve.inspect_work import MAX_PROMPT_CHARS, Refused, inspect_pieces

POLL_S = 0.02  # how often a streaming reply looks for new text
LONG_POLL_MAX_S = 25.0
COMMAND_TIMEOUT_S = 600.0  # a checkpoint of a large model can take minutes
COMMANDS = {"pause": "pause", "unpause": "unpause", "resume": "unpause", "save": "save_now",
            "eval": "eval_now", "stop": "stop", "abort": "stop"}


def model_id(name: str, step: int) -> str:
    """The OpenAI model id: the run's name and the step of the weights that answer."""
    return f"{name}@step-{step}"


class RunService:
    """The request handlers of one served run."""

    def __init__(self, run: LocalRun, name: str, token: str, limits: Limits, telemetry=None) -> None:
        self.run = run
        self.name = name
        self.token = token
        self.limits = limits
        self.telemetry = telemetry
        self.active_generations = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(limits.max_generations)
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._unsubscribe = None
        self._encoded: tuple[int, bytes] | None = None  # (version, JSON) of the last snapshot sent

    # ------------------------------------------------------------- lifecycle
    async def on_startup(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._unsubscribe = self.run.subscribe(self._on_event)

    async def on_shutdown(self, app: web.Application) -> None:
        self.closing = True
        self._changed.set()  # every long poll answers now, with the final snapshot
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _on_event(self, event) -> None:
        """Called on the training thread: wake the long polls, never block."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._changed.set)
            except RuntimeError:  # the loop closed in between
                pass

    # ----------------------------------------------------------- middleware
    @web.middleware
    async def guard(self, request: web.Request, handler) -> web.StreamResponse:
        """The token on every request, checked before a byte of its body is read; every
        failure an OpenAI-shaped error, never a traceback."""
        if not self._has_key(request):
            return error_response(ApiError(401, "a valid API key is needed (Authorization: Bearer KEY); "
                                                "a run's key is in its folder's server.token",
                                           code="invalid_api_key", kind="authentication_error"))
        if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            # Inflating is where a small upload becomes a huge one: no OpenAI client compresses.
            return error_response(ApiError(415, "compressed request bodies are not accepted; send the body "
                                                "without Content-Encoding", code="unsupported_encoding"))
        with answering_with_key(request):  # never closed to make room for others meanwhile
            return await self._answer(request, handler)

    async def _answer(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as err:
            return error_response(err)
        except web.HTTPRequestEntityTooLarge:
            return error_response(ApiError(413, f"the request body is larger than "
                                                f"{self.limits.max_body_bytes:,} bytes"))
        except web.HTTPException as err:
            if err.status < 400:
                raise
            return error_response(ApiError(err.status, err.reason or "request refused"))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as err:  # a bug here must never reach the run
            return error_response(ApiError(500, internal_message(err), kind="server_error"))

    def _has_key(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {self.token}"
        return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))

    # --------------------------------------------------------------- routes
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/run", self.run_info), web.get("/api/snapshot", self.snapshot),
                web.get("/api/telemetry", self.telemetry_sample),
                web.post("/api/commands/{name}", self.command), web.post("/api/chat", self.chat),
                web.post("/api/inspect", self.inspect),
                web.get("/v1/models", self.models), web.get("/v1/models/{id}", self.model),
                web.post("/v1/completions", self.completions),
                web.post("/v1/chat/completions", self.chat_completions),
                web.get("/tokenizer_info", self.tokenizer_info), web.post("/tokenize", self.tokenize),
                web.post("/detokenize", self.detokenize)]

    async def run_info(self, request: web.Request) -> web.Response:
        snap = self.run.snapshot()
        config = self.run.model_config
        return web.json_response({
            "name": self.name, "run_id": snap.run_id, "trains": self.run.trains, "pid": os.getpid(),
            "output_dir": snap.output_dir, "model": config.to_dict() if config is not None else None})

    async def snapshot(self, request: web.Request) -> web.Response:
        after = _query_number(request, "after", -1)
        wait = min(_query_number(request, "wait", 0), LONG_POLL_MAX_S)
        deadline = time.monotonic() + wait
        snap = self.run.snapshot()
        while snap.version <= after and not self.closing and time.monotonic() < deadline:
            self._changed.clear()
            snap = self.run.snapshot()
            if snap.version > after:
                break
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass
            snap = self.run.snapshot()
        return self._snapshot_response(snap)

    def _snapshot_response(self, snap: RunSnapshot) -> web.Response:
        """Encoded once per version, however many studios ask: it costs the training
        process a few milliseconds, with the GIL held."""
        if self._encoded is None or self._encoded[0] != snap.version:
            self._encoded = (snap.version, json.dumps(to_wire(snap)).encode("utf-8"))
        return web.Response(body=self._encoded[1], content_type="application/json")

    async def telemetry_sample(self, request: web.Request) -> web.Response:
        if self.telemetry is None:
            raise ApiError(404, "this server has no telemetry")
        sample = await asyncio.get_running_loop().run_in_executor(None, self.telemetry.sample)
        return json_response(to_wire(sample))

    async def command(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in COMMANDS:
            raise ApiError(404, f"unknown command {name!r}; choose {', '.join(COMMANDS)}")
        if not self.run.trains:
            raise ApiError(409, "nothing trains here: this is a finished run", code="not_running")
        method = getattr(self.run, COMMANDS[name])
        future: Future = method(save=name != "abort") if COMMANDS[name] == "stop" else method()
        try:
            outcome = await asyncio.wait_for(asyncio.wrap_future(future), COMMAND_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ApiError(504, f"{name} did not complete within {COMMAND_TIMEOUT_S:.0f} s", code="timeout")
        except OneLineError as err:
            raise ApiError(409, str(err), code="refused") from None
        return json_response({"outcome": to_wire(outcome)})

    # ----------------------------------------------------------------- chat
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(prompt, str):
            raise ApiError(400, "prompt must be text", "prompt")
        params = _sampling_params(body.get("params", {}))
        # Each token's probability and this many alternatives, in the chat completions' shape.
        top = openai_api.top_logprobs_field(body) if isinstance(body, dict) else 0
        job = None
        async with self._admitted():
            job = await self._start_reply(prompt, params, **({"alternatives": top} if top else {}))
            response = await _event_stream(request)
            await _send_event(response, {"step": job.step})
            async for text in self._pieces(request, job):
                await _send_event(response, {"text": text} | _token_logprobs(job, top))
            stats = job.stats
            await _send_event(response, {"done": True, "step": job.step, "error": job.error,
                                         "finish_reason": stats.finish_reason, "prompt_tokens": stats.prompt_tokens,
                                         "prompt_cut": stats.prompt_cut, "context_full": stats.context_full}
                              | _token_logprobs(job, top))
            return response

    async def inspect(self, request: web.Request) -> web.Response:
        """``{"prompt": text, "top_k": K}`` -> the inspection's JSON (README, "Look inside"), from
        the current weights, taking its turn as a chat reply does."""
        from gemma_core.inspect import MAX_TOP_K

        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            raise ApiError(400, 'send {"prompt": text, "top_k": 1 to 50}', "prompt")
        unknown = sorted(set(body) - {"prompt", "top_k"})
        if unknown:
            raise ApiError(400, f"unknown field {unknown[0]!r}; send prompt and top_k", unknown[0])
        prompt, top_k = body["prompt"], body.get("top_k", 5)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise ApiError(400, f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {top_k!r}", "top_k")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ApiError(400, f"the prompt is {len(prompt):,} characters; inspect takes at most "
                                f"{MAX_PROMPT_CHARS:,} (and 512 tokens)", "prompt", code="prompt_too_long")
        work = inspect_pieces(self._tokenizer(), prompt, top_k, to_json=True)
        loop = asyncio.get_running_loop()
        async with self._admitted():
            job = await loop.run_in_executor(None, self.run.compute, work)
            await loop.run_in_executor(None, job.wait)
            pieces = job.take_pieces()
        if job.error or not pieces:
            raise ApiError(500, f"the pass failed: {job.error or 'no result'}", kind="server_error")
        if isinstance(pieces[0], Refused):
            raise ApiError(400, pieces[0].message, "prompt")
        # Encoded off the loop: a long prompt's maps are megabytes of JSON.
        text = await loop.run_in_executor(None, lambda: json.dumps(_clean(pieces[0]), allow_nan=False))
        return web.Response(text=text, content_type="application/json")

    async def _start_reply(self, prompt: str, params: SamplingParams, **options) -> ChatJob:
        """The run's chat, called off the event loop: it returns once the training step under
        way has ended (on a CPU the weights are copied between two steps), and the loop keeps
        answering everyone else meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(None, lambda: self.run.chat(prompt, params, **options))

    async def _pieces(self, request: web.Request, job: ChatJob):
        """A job's text as it comes; a client gone away cancels the job within a token."""
        async for pieces in self._piece_lists(request, job):
            yield "".join(pieces)

    async def _piece_lists(self, request: web.Request, job: ChatJob):
        """A job's pieces as they come, in lists; a client gone away cancels the job."""
        try:
            while True:
                if _client_gone(request):
                    job.cancel()
                    return
                done = job.done
                pieces = job.take_pieces()
                if pieces:
                    yield pieces
                if done:
                    return
                await asyncio.sleep(POLL_S)
        finally:
            if not job.done:
                job.cancel()

    @contextlib.asynccontextmanager
    async def _admitted(self):
        """A turn to be answered: at most ``max_generations`` requests at once, the rest
        waiting first come, first served; past ``max_waiting`` waiting, 429."""
        if self.closing:
            raise ApiError(503, "the run is ending", code="unavailable")
        if self.active_generations >= self.limits.max_generations and self.waiting >= self.limits.max_waiting:
            raise ApiError(429, f"{self.limits.max_generations} requests are being answered and "
                                f"{self.waiting} are waiting; try again in a moment", code="busy",
                           kind="rate_limit_error")
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.active_generations += 1
        try:
            if self.closing:
                raise ApiError(503, "the run is ending", code="unavailable")
            yield
        finally:
            self.active_generations -= 1
            self._slots.release()

    # --------------------------------------------------------------- OpenAI
    def _model_object(self) -> dict:
        snap = self.run.snapshot()
        return {"id": model_id(self.name, snap.step), "object": "model", "created": int(time.time()),
                "owned_by": "gemma-studio", "root": self.name,
                "max_model_len": getattr(self.run.model_config, "context_length", None)}

    async def models(self, request: web.Request) -> web.Response:
        return json_response({"object": "list", "data": [self._model_object()]})

    async def model(self, request: web.Request) -> web.Response:
        self._check_model(request.match_info["id"])
        return json_response(self._model_object())

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, openai_api.parse_completion(await _json_body(request), self.limits))

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        tokenizer = self._tokenizer()
        return await self._generate(request, openai_api.parse_chat(await _json_body(request), self.limits,
                                                                   tokenizer))

    def _tokenizer(self):
        if self.run.tokenizer is None or self.run.model_config is None:
            raise ApiError(503, "the model is still being prepared; try again in a moment", code="unavailable")
        return self.run.tokenizer

    def _check_model(self, requested: str) -> None:
        if requested != self.name and not requested.startswith(self.name + "@"):
            raise ApiError(404, f"model {requested!r} is not served here; this server serves {self.name!r}",
                           "model", code="model_not_found")

    def _prepare(self, req: GenerationRequest) -> list:
        """Each prompt's token ids, checked against the vocabulary and the context, with the
        sampling settings of its continuations. Run off the event loop: tokenizing is slow."""
        from gemma_core.serve.completion_work import PreparedPrompt

        tokenizer, config = self._tokenizer(), self.run.model_config
        prepared = []
        for i, prompt in enumerate(req.prompts):
            where = "prompt" if len(req.prompts) == 1 else f"prompt[{i}]"
            if isinstance(prompt, str):
                ids, text = tokenizer.encode_document(prompt, special_tokens=req.special_tokens), prompt
            else:
                ids = list(prompt)
                bad = next((t for t in ids if not 0 <= t < tokenizer.n_vocab), None)
                if bad is not None:
                    raise ApiError(400, f"{where} holds token id {bad}; this model's ids are 0 to "
                                        f"{tokenizer.n_vocab - 1}", "prompt")
                text = tokenizer.decode(ids)
            prepared.append(PreparedPrompt(ids, text, self._sampling(req, len(ids), config.context_length, where)))
        return prepared

    def _sampling(self, req: GenerationRequest, prompt_tokens: int, context: int, where: str) -> SamplingParams:
        room = context - prompt_tokens
        scoring_only = req.max_tokens == 0
        if room < (0 if scoring_only else 1):
            raise ApiError(400, f"{where} is {prompt_tokens:,} tokens; the model's context is {context:,}",
                           "prompt", code="context_length_exceeded")
        if req.max_tokens is not None and req.max_tokens > room:
            raise ApiError(400, f"max_tokens {req.max_tokens:,} is more than the {room:,} tokens the context "
                                f"leaves after a {prompt_tokens:,}-token {where}", "max_tokens",
                           code="context_length_exceeded")
        default = 16 if not req.chat else min(256, self.limits.max_tokens)
        wanted = req.max_tokens if req.max_tokens is not None else min(default, room)
        return SamplingParams(max_new_tokens=wanted, temperature=req.temperature,
                              top_p=req.top_p if req.top_p not in (None, 1.0) else None, seed=req.seed,
                              stop_strings=req.stop, stop_token_ids=req.stop_token_ids,
                              frequency_penalty=req.frequency_penalty, presence_penalty=req.presence_penalty)

    async def _generate(self, request: web.Request, req: GenerationRequest) -> web.StreamResponse:
        self._check_model(req.model)
        # Tokenizing a long prompt takes a while: off the event loop, which answers everyone.
        from gemma_core.serve.completion_work import CompletionWork

        prompts = await asyncio.get_running_loop().run_in_executor(None, self._prepare, req)
        work = CompletionWork(req, prompts, self.run.tokenizer)
        async with self._admitted():
            job = await asyncio.get_running_loop().run_in_executor(None, self.run.compute, work)
            response_id = openai_api.new_id("chatcmpl" if req.chat else "cmpl")
            model = model_id(self.name, job.step)
            if req.stream:
                return await self._stream(request, req, job, response_id, model)
            choices = {i: openai_api.Choice(i, "", [], None) for i in range(req.choices)}
            counts = [0, 0]
            async for deltas in self._piece_lists(request, job):
                for delta in deltas:
                    choice = choices[delta.index]
                    choice.text += delta.text
                    choice.tokens.extend(delta.tokens)
                    if delta.finish_reason is not None:
                        choice.finish_reason = delta.finish_reason
                        counts[0] += delta.prompt_tokens
                        counts[1] += delta.completion_tokens
            if job.error:
                raise ApiError(500, f"generation failed: {job.error}", kind="server_error")
            return json_response(openai_api.response(req, response_id, model, list(choices.values()), *counts))

    async def _stream(self, request: web.Request, req: GenerationRequest, job: ChatJob, response_id: str,
                      model: str) -> web.StreamResponse:
        response = await _event_stream(request)
        started: set[int] = set()
        counts = [0, 0]
        async for deltas in self._piece_lists(request, job):
            for delta in deltas:
                first = delta.index not in started
                started.add(delta.index)
                if delta.text or delta.tokens or first or delta.finish_reason is not None:
                    await _send_event(response, openai_api.chunk(
                        req, response_id, model, delta.index, delta.text, delta.tokens, first=first,
                        reason=delta.finish_reason))
                if delta.finish_reason is not None:
                    counts[0] += delta.prompt_tokens
                    counts[1] += delta.completion_tokens
        if job.error:
            await _send_event(response, {"error": {"message": f"generation failed: {job.error}",
                                                   "type": "server_error", "param": None, "code": None}})
        elif req.include_usage:
            await _send_event(response, openai_api.chunk(req, response_id, model,
                                                         usage_counts=openai_api.usage(*counts)))
        await response.write(b"data: [DONE]\n\n")
        return response

    # ------------------------------------------------------------ tokenizer
    # vLLM's routes, which lm-evaluation-harness finds by itself and uses to count tokens.
    async def tokenizer_info(self, request: web.Request) -> web.Response:
        tokenizer = self._tokenizer()
        bos = tokenizer.bos_id
        return json_response({"tokenizer_class": type(tokenizer).__name__, "eos_token": _special_text(tokenizer,
                              tokenizer.eos_id), "bos_token": _special_text(tokenizer, bos) if bos is not None else None,
                              "model_max_length": self.run.model_config.context_length,
                              "chat_template": getattr(tokenizer, "chat_template", None)})

    async def tokenize(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            raise ApiError(400, "send {\"prompt\": text} (and add_special_tokens: true or false)", "prompt")
        add_special = body.get("add_special_tokens", True)
        if not isinstance(add_special, bool):
            raise ApiError(400, f"add_special_tokens must be true or false, got {add_special!r}",
                           "add_special_tokens")
        tokenizer = self._tokenizer()
        ids = await asyncio.get_running_loop().run_in_executor(None, _tokenize, tokenizer, body["prompt"],
                                                               add_special)
        return json_response({"count": len(ids), "max_model_len": self.run.model_config.context_length,
                              "tokens": ids})

    async def detokenize(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        tokens = body.get("tokens") if isinstance(body, dict) else None
        tokenizer = self._tokenizer()
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool)
                                                   and 0 <= t < tokenizer.n_vocab for t in tokens):
            raise ApiError(400, f"tokens must be a list of token ids from 0 to {tokenizer.n_vocab - 1}", "tokens")
        return json_response({"prompt": tokenizer.decode(tokens)})


def _special_text(tokenizer, token_id: int) -> str:
    return tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")


def _tokenize(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    """Text as ordinary text, as prompts are read (``<|endoftext|>`` written out is eleven
    tokens, not the end of text); a text that is exactly one special token's name is that
    token, so that a client can look up a special token's id (lm-evaluation-harness asks for
    EOS's this way)."""
    specials = getattr(tokenizer.encoding, "_special_tokens", None) or {}
    ids = [specials[text]] if text in specials else tokenizer.encode(text)
    bos = tokenizer.bos_id
    if add_special_tokens and bos is not None and ids[:1] != [bos]:
        ids = [bos] + ids
    return ids


# ------------------------------------------------------------------ helpers
def json_response(data: Any, status: int = 200) -> web.Response:
    """Strict JSON (a non-finite number travels as null), as every client parses."""
    return web.Response(text=json.dumps(_clean(data), allow_nan=False), status=status,
                        content_type="application/json")


def error_response(err: ApiError) -> web.Response:
    response = web.Response(text=json.dumps(err.body()), status=err.status, content_type="application/json")
    if err.status == 429:
        response.headers["Retry-After"] = "1"
    return response


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity (a gradient norm can be either): they travel as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _query_number(request: web.Request, key: str, default: float) -> float:
    text = request.query.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, f"{key} must be a number, got {text!r}", key) from None
    if not math.isfinite(value):
        raise ApiError(400, f"{key} must be a finite number", key)
    return value


async def _json_body(request: web.Request) -> Any:
    return openai_api.parse_body(await request.read())


def _sampling_params(data: Any) -> SamplingParams:
    if not isinstance(data, dict):
        raise ApiError(400, "params must be an object", "params")
    known = {"max_new_tokens", "temperature", "top_k", "top_p", "seed"}
    unknown = set(data) - known
    if unknown:
        raise ApiError(400, f"unknown sampling parameter {sorted(unknown)[0]!r}", "params")
    try:
        params = SamplingParams(**data)
        params.validate()
    except (TypeError, OneLineError) as err:
        raise ApiError(400, str(err), "params") from None
    return params


def _token_logprobs(job: ChatJob, top: int) -> dict:
    """The tokens recorded since the last event, for /api/chat (nothing unless asked)."""
    if not top:
        return {}
    return {"logprobs": {"content": [logprobs_entry(choice, top) for choice in job.take_tokens()]}}


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _event_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    return response


async def _send_event(response: web.StreamResponse, data: dict) -> None:
    await response.write(f"data: {json.dumps(_clean(data), allow_nan=False)}\n\n".encode("utf-8"))


def build_app(service: RunService) -> web.Application:
    app = web.Application(middlewares=[service.guard], client_max_size=service.limits.max_body_bytes)
    app.add_routes(service.routes())
    app.on_startup.append(service.on_startup)
    app.on_shutdown.append(service.on_shutdown)
    return app


def serving_files(folder: Path) -> tuple[Path, Path]:
    """Where a run's server writes its address and its token."""
    return folder / "server.json", folder / "server.token"
