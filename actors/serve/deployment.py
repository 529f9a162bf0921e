"""The Ray Serve deployment: OpenAI's HTTP routes over `SelfCorrection`, with batched engine calls.

`build` is the application builder that `serve run` / `serve deploy` import (cluster/serve.yaml,
`import_path: actors.serve.deployment:build`), as Ray Serve documents ("Pass arguments to
applications"): its `args` are checked against `ServeArgs`, a pydantic model.

Batching: every engine call of every request goes through `@serve.batch`, which gathers the calls
waiting within batch_wait_timeout_s (up to max_batch_size) into one `generate_batch`; calls with the
same sampling parameters become one engine call. That is the transformers engine's only batching;
vLLM's offline engine behind the same interface schedules each such call continuously, with its
prefix cache serving attempt 2's prompt, which begins with attempt 1's. One batch runs at a time
per replica (the engine is not thread-safe); replicas scale out. A streamed request's last attempt
is batched like any other call: its tokens leave the engine's thread as each step makes them
(actors/serve/streaming.py), so the stream does not wait for the rest of the batch.

Every response names the replica that answered in the `x-score-replica` header (Serve's replica id):
which replica served what, when there are several.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from typing import AsyncIterator, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from actors.engines import Generation, SamplingParams, TokenSink
from actors.serve import responses
from actors.serve.app import Choice, EngineCall, SelfCorrection
from actors.serve.checkpoint import resolve
from actors.serve.protocol import APIError, ChatCompletionRequest, CompletionRequest, parse
from actors.serve.streaming import Stream
from common import telemetry
from common.logs import configure_process


class ServeArgs(BaseModel):
    """The application's arguments (`args:` in cluster/serve.yaml, key=value after `serve run IMPORT_PATH`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="A run directory (its checkpoint/ and config.yaml), or a Hugging Face directory.")
    engine: Literal["transformers", "vllm"] = Field("transformers", description="The generation engine.")
    task: str | None = Field(None, description="For a Hugging Face directory: the task whose instruction is the "
                             "self-correction turn (default sort). A run directory names its own.")
    name: str | None = Field(None, description="The `model` requests name; default the run's (or directory's) name.")
    max_attempts: int = Field(4, ge=1, description="The largest `attempts` a request may ask for.")
    max_batch_size: int = Field(16, ge=1, description="Engine calls gathered into one batch.")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="How long a batch waits to fill.")
    threads: int = Field(1, ge=1, description="torch threads per replica (match the replica's num_cpus).")


app = FastAPI(title="SCoRe-RL self-correcting model")
logger = logging.getLogger("ray.serve")
ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/models")  # the metrics' route label: these or "other"


def _server_error(exc: Exception) -> APIError:
    """A bug or an engine failure, in OpenAI's shape too."""
    logger.error("request failed", exc_info=exc)
    return APIError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error")


async def _sse(chunks: AsyncIterator[dict]) -> AsyncIterator[str]:
    """Server-sent events as OpenAI's (and vLLM's) streams send them. An error after the stream began
    is an event of its own, {"error": ...}, which the openai SDK raises, and the stream still ends."""
    try:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
    except Exception as exc:
        yield f"data: {json.dumps(_server_error(exc).body())}\n\n"
    yield "data: [DONE]\n\n"


# Registered before @serve.ingress takes the app.
@app.middleware("http")
async def _replica_header(request: Request, call_next) -> Response:
    response = await call_next(request)
    response.headers["x-score-replica"] = serve.get_replica_context().replica_id.unique_id
    return response


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """An unknown route or method, in OpenAI's error shape too."""
    telemetry.count_request(request.url.path if request.url.path in ROUTES else "other", exc.status_code)
    return JSONResponse(APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}").body(),
                        status_code=exc.status_code)


@serve.deployment(name="SelfCorrection", max_ongoing_requests=64)
@serve.ingress(app)
class SelfCorrectionDeployment:
    def __init__(self, args: ServeArgs):
        configure_process(args.threads)
        self.threads = args.threads
        self._running: set[asyncio.Task] = set()  # streamed requests' runs
        self.impl = SelfCorrection.load(resolve(args.model, args.task, args.name), args.engine, args.max_attempts)
        self._generate_batch.set_max_batch_size(args.max_batch_size)
        self._generate_batch.set_batch_wait_timeout_s(args.batch_wait_timeout_s)

    @serve.batch
    async def _generate_batch(self, items: list[EngineCall]) -> list[list[Generation]]:
        def run():
            configure_process(self.threads)  # a thread's OpenMP thread count is its own
            return self.impl.generate_batch(items)

        return await asyncio.to_thread(run)  # the event loop keeps taking requests (and streaming) meanwhile

    async def _generate(self, prompts: list[list[int]], params: SamplingParams, key: object,
                        on_tokens: TokenSink | None = None) -> list[Generation]:
        return await self._generate_batch(EngineCall(prompts, params, key, on_tokens))

    @app.get("/v1/models")
    async def models(self) -> dict:
        name = self.impl.served.name
        telemetry.count_request("/v1/models", 200)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "score-rl",
                                            "max_model_len": self.impl.served.context,
                                            "max_attempts": self.impl.max_attempts}]}

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._answer(request, CompletionRequest, "completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._answer(request, ChatCompletionRequest, "chat")

    async def _answer(self, request: Request, model: type, kind: responses.Kind) -> Response:
        started = time.perf_counter()
        route = request.url.path
        try:
            req = parse(await request.body(), model)
            x1s = self.impl.check(req.model, req.prompts(), req.attempts, req.max_tokens)
            run = functools.partial(self.impl.run, x1s, req.n, req.attempts, req.max_tokens, req.temperature,
                                    req.top_p, req.seed, req.stop, self._generate)
            if req.stream:  # checked: from here on the status is 200, and errors go in the stream
                telemetry.count_request(route, 200)
                return self._stream(kind, req, run, started)
            choices = await run()
        except APIError as exc:
            telemetry.count_request(route, exc.status)
            return JSONResponse(exc.body(), status_code=exc.status)
        except Exception as exc:
            telemetry.count_request(route, 500)
            return JSONResponse(_server_error(exc).body(), status_code=500)
        telemetry.count_request(route, 200)
        self._record(req, choices, started)
        return JSONResponse(responses.body(kind, req.model, choices, sum(map(len, x1s)), req.return_token_ids))

    def _stream(self, kind: responses.Kind, req, run, started: float) -> StreamingResponse:
        """Runs the request in a task of its own, which reports to the stream the response reads."""
        stream = Stream()

        async def produce() -> None:
            try:
                choices = await run(progress=stream)
            except Exception as exc:
                stream.fail(exc)
            else:
                self._record(req, choices, started)
                stream.end(choices)

        task = asyncio.create_task(produce())
        self._running.add(task)  # a task the loop only holds weakly; it finishes even if the client left
        task.add_done_callback(self._running.discard)
        chunks = responses.chunks(kind, req.model, stream, self.impl.turns.text, req.stop, req.return_token_ids)
        return StreamingResponse(_sse(chunks), media_type="text/event-stream")

    @staticmethod
    def _record(req, choices: list[Choice], started: float) -> None:
        tokens = [0] * req.attempts
        for c in choices:
            for k, attempt in enumerate(c.attempts):
                tokens[k] += attempt.generated
        telemetry.record_served(req.attempts, time.perf_counter() - started, tokens,
                                [c.last.text != c.attempts[0].text for c in choices if req.attempts > 1])


def application(args: ServeArgs, num_replicas: int | None = None) -> serve.Application:
    """The application, with one CPU per torch thread for each replica (a Serve config's deployment
    settings override these: replicas, autoscaling, resources)."""
    options = {"ray_actor_options": {"num_cpus": args.threads}, **({"num_replicas": num_replicas} if num_replicas else {})}
    return SelfCorrectionDeployment.options(**options).bind(args)


def build(args: dict) -> serve.Application:
    """The application builder `serve run` / `serve deploy` call with a config's `args` (it must take
    exactly one parameter): `serve run actors.serve.deployment:build model=runs/<run>`. Validated here
    rather than by Serve's typed-builder path, which reads the annotation (a string in this module)."""
    return application(ServeArgs.model_validate(args))
