"""The serving API for real: cluster/serve.yaml deployed with `serve deploy` onto a private `ray start --head`
(transformers engine, its autoscaling held at two replicas), called over HTTP through the openai SDK (raw
HTTP for bodies the SDK cannot send); the attempts compared token for token with the training rollout;
lists of prompts, conversations, streaming while generating, both replicas answering; every refusal; the
metrics through a real Prometheus and the dashboard's Serving row; and `python -m actors.serve` end to
end, on the vLLM engine, streaming too.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from e2e import ROOT
from prom import dashboard_rows, prometheus, query, wait_for
from ray_head import ray_head

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow

from actors.engines import SamplingParams  # noqa: E402
from actors.engines.hf_engine import TransformersEngine  # noqa: E402
from actors.rollout import RolloutWorker  # noqa: E402
from common import telemetry  # noqa: E402
from common.ports import free_ports  # noqa: E402
from graders.registry import make_task  # noqa: E402
from protos import ATTEMPT1, ATTEMPT2, dump_config, load_config  # noqa: E402

RATE_INTERVAL = "20s"  # for $__rate_interval, as in test_prometheus.py
PROBLEMS = 4
REPLICAS = 2


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    model: str
    prometheus: str
    started: float
    run_dir: Path
    model_dir: Path

    def client(self, prefix: str = "") -> "openai.OpenAI":
        return openai.OpenAI(base_url=f"{self.url}{prefix}/v1", api_key="unused", max_retries=0, timeout=120)

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        """Raw HTTP, for what the SDK would not send."""
        req = urllib.request.Request(f"{self.url}{path}", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)


def base_model(tmp: Path) -> tuple[Path, Path]:
    """The cached warm-started base model, and a finished run's layout around it (config.yaml, checkpoint/)."""
    from learner.model.warmstart import ensure_base_model

    cfg = load_config(overrides=[f"model.cache_dir={ROOT / '.cache/models'}", f"output_dir={tmp}"])
    model_dir = ensure_base_model(cfg, make_task(cfg.task.name, cfg.task.params))
    run_dir = tmp / "score-serve-test"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    (run_dir / "checkpoint").symlink_to(model_dir)
    return run_dir, model_dir


def serve_config(run_dir: Path, port: int) -> dict:
    """cluster/serve.yaml with this run and port, its autoscaling kept at REPLICAS or more (the requests here
    are far below its target_ongoing_requests, so it stays at REPLICAS)."""
    cfg = yaml.safe_load((ROOT / "cluster/serve.yaml").read_text())
    cfg["http_options"]["port"] = port
    (app,) = cfg["applications"]
    app["args"]["model"] = str(run_dir)
    (deployment,) = app["deployments"]
    deployment["autoscaling_config"]["min_replicas"] = REPLICAS
    return cfg


def serve_status(head) -> dict:
    status = subprocess.run([str(Path(sys.executable).parent / "serve"), "status", "--address", head.dashboard],
                            env=head.env, capture_output=True, text=True, timeout=60)
    return yaml.safe_load(status.stdout) or {}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    run_dir, model_dir = base_model(tmp)
    (port,) = free_ports(1)
    (tmp / "serve.yaml").write_text(yaml.safe_dump(serve_config(run_dir, port)))
    with ray_head(num_cpus=4, env={"RAY_metrics_report_interval_ms": "500"}) as head, \
            prometheus(head.temp_dir, tmp) as prom:
        started = time.time()
        deployed = subprocess.run([str(Path(sys.executable).parent / "serve"), "deploy", str(tmp / "serve.yaml"),
                                   "--address", head.dashboard], env=head.env, capture_output=True, text=True, timeout=120)
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        def all_replicas_running() -> bool:
            app = serve_status(head).get("applications", {}).get("score", {})
            states = app.get("deployments", {}).get("SelfCorrection", {}).get("replica_states", {})
            return app.get("status") == "RUNNING" and states.get("RUNNING") == REPLICAS

        try:
            wait_for(ready, 180, "the application of cluster/serve.yaml serving")
            wait_for(all_replicas_running, 120, f"{REPLICAS} replicas running")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; serve status:\n{yaml.safe_dump(serve_status(head))[-4000:]}") from None
        yield Server(url, run_dir.name, prom, started, run_dir, model_dir)


@pytest.fixture(scope="module")
def reference(server):
    """The training code's two-attempt rollout, greedy, on the same checkpoint: (problem, meta, attempt ids)."""
    task = make_task("sort", {})
    problems = task.eval_problems(PROBLEMS)
    worker = RolloutWorker(TransformersEngine.from_pretrained(server.model_dir), task)
    info, batch = worker.rollout(problems, k=1, params=SamplingParams(load_config().score.max_new_tokens, 0.0))
    ids = [(batch.tokens[i][batch.segment[i] == ATTEMPT1].tolist(), batch.tokens[i][batch.segment[i] == ATTEMPT2].tolist())
           for i in range(len(problems))]
    return list(zip(problems, info.meta, ids))


def attempts_of(choice) -> list[dict]:
    return choice.self_correction["attempts"]


def test_models_lists_the_run(server):
    (model,) = server.client().models.list().data
    assert model.id == server.model == "score-serve-test"
    assert model.max_model_len == 512 and model.max_attempts == 4


def test_attempts_equal_the_training_rollout_token_for_token(server, reference):
    """Sent concurrently (so they share engine batches), each request's attempts are the rollout's."""
    client = server.client()

    def ask(problem):
        return client.completions.create(model=server.model, prompt=problem.prompt, temperature=0,
                                         extra_body={"attempts": 2, "return_token_ids": True})

    with ThreadPoolExecutor(PROBLEMS) as pool:
        responses = list(pool.map(ask, [p for p, _, _ in reference]))
    changed = 0
    for response, (problem, meta, (ids1, ids2)) in zip(responses, reference):
        (choice,) = response.choices
        first, second = attempts_of(choice)
        assert (first["token_ids"], second["token_ids"]) == (ids1, ids2), problem.prompt
        assert (first["text"], second["text"]) == (meta.attempt1, meta.attempt2)
        assert (first["finish_reason"], second["finish_reason"]) == (meta.finish1, meta.finish2)
        assert choice.text == meta.attempt2 and choice.finish_reason == meta.finish2
        assert response.usage.completion_tokens == len(ids1) + len(ids2)
        changed += meta.attempt1 != meta.attempt2
    assert changed, "no reference problem whose second attempt differs: pick others to test revisions"


def test_one_attempt_is_plain_generation_and_chat_is_the_same(server, reference):
    client = server.client()
    problem, meta, _ = reference[0]
    plain = client.completions.create(model=server.model, prompt=problem.prompt, temperature=0, extra_body={"attempts": 1})
    assert plain.choices[0].text == meta.attempt1 and len(attempts_of(plain.choices[0])) == 1
    chat = client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": problem.prompt}],
                                          temperature=0)  # attempts defaults to 2
    (choice,) = chat.choices
    assert chat.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.message.content == meta.attempt2
    assert [a["text"] for a in attempts_of(choice)] == [meta.attempt1, meta.attempt2]


def test_more_attempts_chain_the_same_turn(server, reference):
    """Attempt 3 is rendered from attempt 2 as attempt 2 was from attempt 1 (Turns.second)."""
    problem, meta, (ids1, ids2) = reference[1]
    engine = TransformersEngine.from_pretrained(server.model_dir)
    worker = RolloutWorker(engine, make_task("sort", {}))
    x2 = worker.turns.second(worker.turns.first(problem), ids1)
    (third,) = engine.generate([worker.turns.second(x2, ids2)], SamplingParams(48, 0.0))
    response = server.client().completions.create(model=server.model, prompt=problem.prompt, temperature=0,
                                                  extra_body={"attempts": 3, "return_token_ids": True})
    assert [a["token_ids"] for a in attempts_of(response.choices[0])] == [ids1, ids2, third.token_ids]


def test_sampling_n_seed_top_p_and_stop(server, reference):
    client = server.client()
    problem = reference[2][0]
    kwargs = dict(model=server.model, prompt=problem.prompt, temperature=1.0, n=3, seed=7, max_tokens=20)
    a = client.completions.create(**kwargs)
    b = client.completions.create(**kwargs)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert all(len(attempts_of(c)) == 2 and c.self_correction["truncated"] == [] for c in a.choices)
    assert [attempts_of(c) for c in a.choices] == [attempts_of(c) for c in b.choices]  # seeded: reproducible
    assert len({json.dumps(attempts_of(c)) for c in a.choices}) > 1  # n independent samples
    assert all(t["tokens"] <= 20 for c in a.choices for t in attempts_of(c))
    # a nucleus that holds only the most likely token samples greedily
    narrow = client.completions.create(**{**kwargs, "top_p": 1e-6, "n": 1})
    assert attempts_of(narrow.choices[0])[:1] == attempts_of(
        client.completions.create(**{**kwargs, "temperature": 0, "n": 1}).choices[0])[:1]
    # a stop string ends every attempt before it, and the next attempt conditions on the cut attempt
    meta = reference[0][1]
    stop = meta.attempt1.split()[1]
    cut = client.completions.create(model=server.model, prompt=reference[0][0].prompt, temperature=0, stop=[" " + stop])
    first = attempts_of(cut.choices[0])[0]
    assert first["text"] == meta.attempt1[: meta.attempt1.index(" " + stop)] and first["finish_reason"] == "stop"


def timed(stream) -> list[tuple[float, object]]:
    """Each chunk of an SDK stream with the time it arrived."""
    return [(time.perf_counter(), chunk) for chunk in stream]


def assert_streamed_while_generated(started: float, chunks: list[tuple[float, object]], text) -> None:
    """The last attempt's text came as several events spread over its generation, not in one burst after it.
    The first chunk comes when attempt 1 is done; attempt 2, about as long, is generated after it, so its
    deltas spread over about as long as the wait for that first chunk. Sent after generation (as this
    server once did), every chunk comes in one burst at the end: their spread is a sliver of that wait."""
    content = [t for t, chunk in chunks if text(chunk)]
    assert len(content) >= 5, f"{len(content)} content chunks"
    wait, spread = chunks[0][0] - started, content[-1] - content[0]
    assert spread > 0.25 * wait, f"the deltas came within {spread * 1e3:.1f} ms, the first chunk after {wait * 1e3:.1f} ms"


def test_streaming_sends_the_last_attempt_while_it_is_generated(server, reference):
    client = server.client()
    problem, meta, (ids1, ids2) = reference[3]
    started = time.perf_counter()
    chunks = timed(client.completions.create(model=server.model, prompt=problem.prompt, temperature=0, stream=True,
                                             extra_body={"return_token_ids": True}))
    assert_streamed_while_generated(started, chunks, lambda c: c.choices[0].text)
    first, last = chunks[0][1].choices[0], chunks[-1][1].choices[0]
    assert [a["text"] for a in first.self_correction["attempts"]] == [meta.attempt1]
    # the streamed text is the greedy answer without streaming, and the tokens the rollout's
    assert "".join(c.choices[0].text for _, c in chunks) == meta.attempt2 == client.completions.create(
        model=server.model, prompt=problem.prompt, temperature=0).choices[0].text
    assert last.finish_reason == meta.finish2
    assert [a["token_ids"] for a in last.self_correction["attempts"]] == [ids1, ids2]
    started = time.perf_counter()
    chat = timed(client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": problem.prompt}],
                                                temperature=0, stream=True, n=2))
    assert chat[0][1].object == "chat.completion.chunk"
    for index in (0, 1):
        mine = [c.choices[0] for _, c in chat if c.choices[0].index == index]
        assert mine[0].delta.role == "assistant"
        assert "".join(c.delta.content or "" for c in mine) == meta.attempt2
        assert mine[-1].finish_reason == meta.finish2
    assert_streamed_while_generated(started, chat, lambda c: c.choices[0].delta.content)


def test_a_list_of_prompts_gets_n_choices_each_numbered_as_openai_does(server, reference):
    """Prompt i's choice j is choice i*n + j; usage counts every prompt once."""
    client = server.client()
    (p0, m0, _), (p1, m1, _) = reference[:2]
    reply = client.completions.create(model=server.model, prompt=[p0.prompt, p1.prompt], n=2, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert [c.text for c in reply.choices] == [m0.attempt2, m0.attempt2, m1.attempt2, m1.attempt2]
    assert [[a["text"] for a in attempts_of(c)] for c in reply.choices[::2]] == [[m0.attempt1, m0.attempt2],
                                                                                [m1.attempt1, m1.attempt2]]
    assert reply.usage.prompt_tokens == len(tokenizer(server)(p0.prompt)) + len(tokenizer(server)(p1.prompt))
    chunks = list(client.completions.create(model=server.model, prompt=[p0.prompt, p1.prompt], temperature=0, stream=True))
    assert ["".join(c.choices[0].text for c in chunks if c.choices[0].index == i) for i in (0, 1)] == [m0.attempt2, m1.attempt2]


def test_a_conversation_is_rendered_as_the_turns_are(server, reference):
    """Messages are rendered one after another without role markers, an assistant message ending with EOS as
    a generated attempt does: [user x1, assistant y1, user instruction] is attempt 2's prompt, so its one
    attempt is the rollout's attempt 2. A system message is text before the rest, counted in the prompt."""
    client = server.client()
    problem, meta, (ids1, ids2) = reference[0]
    assert meta.finish1 == "stop"  # y1 ends with EOS, as the assistant message will
    instruction = make_task("sort", {}).instruction
    reply = client.chat.completions.create(
        model=server.model, temperature=0, extra_body={"attempts": 1, "return_token_ids": True},
        messages=[{"role": "user", "content": problem.prompt}, {"role": "assistant", "content": meta.attempt1},
                  {"role": "user", "content": instruction}])
    (choice,) = reply.choices
    assert choice.message.content == meta.attempt2 and attempts_of(choice)[0]["token_ids"] == ids2
    encode = tokenizer(server)
    assert reply.usage.prompt_tokens == len(encode(problem.prompt)) + len(ids1) + len(encode(instruction))
    system = "You sort numbers."
    reply = client.chat.completions.create(model=server.model, temperature=0, max_tokens=4, messages=[
        {"role": "system", "content": system}, {"role": "user", "content": problem.prompt}])
    assert reply.usage.prompt_tokens == len(encode(system)) + len(encode(problem.prompt))


def test_both_replicas_answer_and_requests_spread(server, reference):
    """Concurrent requests reach both replicas of the deployment (the x-score-replica header names the one that
    answered), and each gives the same greedy answer."""
    client = server.client()

    def ask(problem):
        raw = client.completions.with_raw_response.create(model=server.model, prompt=problem.prompt, temperature=0)
        return raw.headers["x-score-replica"], raw.parse()

    asked = reference * 2
    with ThreadPoolExecutor(len(asked)) as pool:
        answers = list(pool.map(ask, [p for p, _, _ in asked]))
    assert len({replica for replica, _ in answers}) == REPLICAS
    assert [reply.choices[0].text for _, reply in answers] == [meta.attempt2 for _, meta, _ in asked]


def test_a_later_attempt_is_cut_to_fit_the_context_and_says_so(server, reference):
    """max_tokens fits attempt 1, but attempt 2's prompt (x1 + y1 + instruction) leaves less room."""
    problem, meta, (ids1, ids2) = reference[0]
    x1_len = server.post("/v1/completions", json.dumps(
        {"model": server.model, "prompt": problem.prompt, "attempts": 1, "max_tokens": 1}).encode())[1]["usage"]["prompt_tokens"]
    max_tokens = 512 - x1_len  # attempt 1 may fill the context; it stops at its EOS long before
    response = server.client().completions.create(model=server.model, prompt=problem.prompt, temperature=0,
                                                  max_tokens=max_tokens, extra_body={"attempts": 2})
    (choice,) = response.choices
    assert [a["text"] for a in attempts_of(choice)] == [meta.attempt1, meta.attempt2]
    (note,) = choice.self_correction["truncated"]
    room = max_tokens - len(ids1) - len(reference_instruction(server))
    assert note == f"attempt 2 was cut to {room} tokens (max_tokens {max_tokens}) to fit the model's context (512 tokens)"


def reference_instruction(server) -> list[int]:
    return tokenizer(server)(make_task("sort", {}).instruction)


def tokenizer(server):
    """The checkpoint's tokenizer, as the turns encode text: text -> token ids."""
    from transformers import AutoTokenizer

    from actors.turns import Turns

    return Turns(AutoTokenizer.from_pretrained(server.model_dir), make_task("sort", {}))._encode


@pytest.mark.parametrize("body, status, param, message", [
    ({"model": "gpt-4", "prompt": "sort: 3 1\nanswer:"}, 404, "model",
     "The model `gpt-4` does not exist; this server serves `score-serve-test`"),
    ({"prompt": "sort: 3 1\nanswer:", "attempts": 5}, 400, "attempts", "attempts must be between 1 and 4 (got 5)"),
    ({"prompt": "sort: 3 1\nanswer:", "attempts": 0}, 400, "attempts", "attempts must be between 1 and 4 (got 0)"),
    ({"prompt": "sort: 3 1\nanswer:", "max_tokens": 600}, 400, "max_tokens",
     "max_tokens: this model's context is 512 tokens and the prompt takes 9, so an attempt has at most 503 tokens, "
     "but max_tokens is 600"),
    ({"prompt": "  "}, 400, "prompt", "prompt: the prompt is empty"),
    ({"prompt": ["sort: 2 1\nanswer:", ""]}, 400, "prompt", "prompt.1: the prompt is empty"),
    ({"prompt": []}, 400, "prompt", "prompt: Value error, send a prompt, or a non-empty list of prompts"),
    ({"prompt": [5, 9, 2]}, 400, "prompt",
     "prompt: Value error, token-id prompts are not supported: send text (a string or a list of strings)"),
    ({"prompt": [[5, 9], [2]]}, 400, "prompt",
     "prompt: Value error, token-id prompts are not supported: send text (a string or a list of strings)"),
    ({"prompt": ["sort: 2 1\nanswer:", "sort: " + "9 " * 300], "max_tokens": 8}, 400, "prompt",
     "prompt.1: the prompt takes 603 tokens, and this model's context is 512 tokens"),
    ({"prompt": "sort: 3 1\nanswer:", "n": 0}, 400, "n", "n: Input should be greater than or equal to 1"),
    ({"prompt": "sort: 3 1\nanswer:", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop",
     "stop: Value error, stop takes a string or up to 4 non-empty strings"),
    ({}, 400, "model", "model: Field required"),
])
def test_bad_completions_are_refused_naming_the_field(server, body, status, param, message):
    body = {"model": server.model, **body} if "model" in body or "prompt" in body else body
    code, error = server.post("/v1/completions", json.dumps(body).encode())
    assert code == status
    assert error["error"]["param"] == param and error["error"]["message"] == message
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == {404: "model_not_found"}.get(status, "context_length_exceeded" if "context is" in message else None)


def test_malformed_json_and_bad_chat_messages_are_refused(server):
    code, error = server.post("/v1/completions", b'{"model": "x", "prompt": ')
    assert code == 400 and error["error"]["message"].startswith("Malformed JSON in the request body: Expecting value")
    code, error = server.post("/v1/chat/completions", b"[1, 2]")
    assert code == 400 and error["error"]["message"] == "The request body must be a JSON object, got list"
    client = server.client()
    user = {"role": "user", "content": "sort: 2 1\nanswer:"}
    for messages, message in [
        ([{"role": "user", "content": ""}], "messages: the prompt is empty"),
        ([user, {"role": "assistant", "content": " 1 2"}],
         "messages: the last message must be the user's task prompt, the one the attempts answer (got assistant)"),
        ([user, {"role": "tool", "content": "42", "tool_call_id": "call_1"}, user],
         "messages.1.role: tool messages are not supported: this model calls no tools"),
        ([], "messages: send at least one message, the last one the user's task prompt"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=server.model, messages=messages)
        assert refused.value.status_code == 400 and refused.value.body["param"] == "messages"
        assert refused.value.body["message"] == message
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="nope", prompt="sort: 2 1\nanswer:")
    assert missing.value.status_code == 404 and missing.value.body["code"] == "model_not_found"


def test_the_serving_metrics_and_dashboard_row(server):
    """Last in the module: the requests above, as Prometheus scraped them, and every expression of the
    dashboard's Serving row returns data."""
    time.sleep(3)  # the last report interval (0.5 s) and scrape

    def last(expr: str) -> dict[tuple, float]:
        result = query(server.prometheus, "/api/v1/query", query=f"last_over_time(({expr})[30m:1s])", time=time.time())
        return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in result}

    counted = {(dict(k)["route"], dict(k)["status"]): v for k, v in
               last("sum by (route, status) (ray_score_serve_requests_total)").items()}
    # what the tests above sent (GET /v1/models is polled while the app starts: any number)
    assert {k: v for k, v in counted.items() if k[0] != "/v1/models"} == {
        ("/v1/completions", "200"): 25, ("/v1/completions", "400"): 13, ("/v1/completions", "404"): 2,
        ("/v1/chat/completions", "200"): 4, ("/v1/chat/completions", "400"): 5,
    }
    by_attempts = {dict(k)["attempts"]: v for k, v in
                   last("sum by (attempts) (ray_score_serve_request_latency_seconds_count)").items()}
    assert set(by_attempts) == {"1", "2", "3"}
    tokens = {dict(k)["attempt"]: v for k, v in last("sum by (attempt) (ray_score_serve_tokens_generated_total)").items()}
    assert set(tokens) == {"1", "2", "3"} and tokens["1"] > tokens["3"] > 0
    assert last('sum(ray_score_serve_revisions_total{last_vs_first="changed"})')
    exprs = dashboard_rows()["Serving"]
    used = {spec.exported for spec in telemetry.SERVING}
    assert all(any(name in expr for expr in exprs) for name in used)
    empty = []
    for expr in exprs:
        series = query(server.prometheus, "/api/v1/query_range", query=expr.replace("$__rate_interval", RATE_INTERVAL),
                       start=server.started, end=time.time(), step=1)
        if not any(math.isfinite(float(v)) for s in series for _, v in s["values"]):
            empty.append(expr)
    assert not empty, f"Serving row expressions with no data: {empty}"


def test_one_command_serves_a_run_directory_on_vllm(server, reference):
    """`python -m actors.serve RUN_DIR --engine vllm` on its own local Ray: prints the URL, serves the rollout's
    greedy attempts from vLLM's CPU build (test_vllm_engine.py holds vLLM's tokens to the transformers
    engine's), streams while vLLM generates, stops on SIGINT."""
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "actors.serve", str(server.run_dir), "--engine", "vllm",
                             "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        line = ""
        while "serving " not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert line.startswith(f"serving score-serve-test ({server.run_dir / 'checkpoint'}, task sort, vllm, 1 replica(s)) "
                               f"at http://127.0.0.1:{port}/v1"), line
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
        for problem, _, (ids1, ids2) in reference:
            reply = client.completions.create(model="score-serve-test", prompt=problem.prompt, temperature=0,
                                              extra_body={"return_token_ids": True})
            assert [a["token_ids"] for a in attempts_of(reply.choices[0])] == [ids1, ids2], problem.prompt
        # vLLM streams the last attempt as it generates it too
        problem, meta, _ = reference[3]
        started = time.perf_counter()
        chunks = timed(client.completions.create(model="score-serve-test", prompt=problem.prompt, temperature=0,
                                                 stream=True))
        assert "".join(c.choices[0].text for _, c in chunks) == meta.attempt2
        assert_streamed_while_generated(started, chunks, lambda c: c.choices[0].text)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
