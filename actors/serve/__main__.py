"""`python -m actors.serve RUN_DIR`: serve a run's checkpoint (or a Hugging Face directory) with one command.

Starts a local Ray (or attaches to RAY_ADDRESS), deploys the application on Ray Serve, prints the
base URL for OpenAI clients, and serves until Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import signal
import threading

from actors.serve.deployment import ServeArgs, application


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, ServeArgs]:
    parser = argparse.ArgumentParser(prog="python -m actors.serve", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a run directory (runs/<run>), its checkpoint/, or a Hugging Face directory")
    parser.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--task", help="for a Hugging Face directory: the task whose instruction is the second turn (default sort)")
    parser.add_argument("--name", help="the model name requests use (default: the run's directory name)")
    parser.add_argument("--max-attempts", type=int, default=ServeArgs.model_fields["max_attempts"].default)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (and CPUs) per replica")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    ns = parser.parse_args(argv)
    args = ServeArgs(model=os.path.abspath(ns.model), engine=ns.engine, task=ns.task, name=ns.name,
                     max_attempts=ns.max_attempts, threads=ns.threads)
    return ns, args


def main(argv: list[str] | None = None) -> None:
    import ray
    from ray import serve

    from actors.serve.checkpoint import resolve

    ns, args = parse_args(argv)
    served = resolve(args.model, args.task, args.name)  # a wrong path fails here, before Ray starts
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, ns.replicas * ns.threads + 1), include_dashboard=False,
                 log_to_driver=False)
    serve.start(http_options={"host": ns.host, "port": ns.port})
    serve.run(application(args, ns.replicas), name="score", route_prefix="/")
    print(f"serving {served.name} ({served.model_dir}, task {served.task_name}, {args.engine}, "
          f"{ns.replicas} replica(s)) at http://{ns.host}:{ns.port}/v1", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
