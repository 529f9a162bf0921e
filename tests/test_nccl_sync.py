"""The weight-broadcast group: two real processes on gloo (CPU, and CUDA tensors when a GPU is
present), and NCCL on GPUs. NCCL refuses two ranks on one GPU ("Duplicate GPU detected"), so with
a single GPU the NCCL test runs the group at world size 1 and the two-rank test needs two GPUs."""
from __future__ import annotations

import multiprocessing
import os
import time

import pytest
import torch

from actors.weight_sync import WeightBroadcastGroup
from common.ports import free_port

TIMEOUT_S = 4.0  # for the failure tests: how long a dead or silent peer may cost
JOIN_S = 120.0  # for the working exchange: a spawned receiver imports torch, maybe initialises CUDA


GPUS = torch.cuda.device_count()
# (backend, sender device, receiver device)
LINKS = [("gloo", "cpu", "cpu")]
if GPUS:
    LINKS.append(("gloo", "cuda:0", "cuda:0"))
if GPUS >= 2:
    LINKS.append(("nccl", "cuda:0", "cuda:1"))


def join(
    port: int, rank: int, backend: str = "gloo", device: str = "cpu", world_size: int = 2, timeout_s: float = TIMEOUT_S
) -> WeightBroadcastGroup:
    return WeightBroadcastGroup(
        "127.0.0.1", port, rank, world_size=world_size, backend=backend, timeout_s=timeout_s, device=device
    )


def receive_into_engine(port: int, model_dir: str, backend: str, device: str, results) -> None:
    from actors.engines.hf_engine import TransformersEngine

    engine = TransformersEngine.from_pretrained(model_dir, device=device)
    group = join(port, 1, backend, device, timeout_s=JOIN_S)
    engine.update_weights(*group.receive())
    # numpy pickles by value; a tensor would point into this process's memory, gone once it exits
    results.put((engine.version, {k: v.cpu().numpy() for k, v in engine.model.state_dict().items()}))
    group.close()


def join_then_misbehave(port: int, how: str, started, joined) -> None:
    started.set()  # torch is imported by now: joining takes milliseconds, well within TIMEOUT_S
    group = join(port, rank=0)  # noqa: F841  held: a collected group closes its connections
    # rank 0 hosts the group's TCP store and its constructor can return while the receiver is
    # still reading the rendezvous from it: dying then fails the receiver's join, not its receive
    joined.wait(JOIN_S)
    if how == "dies":
        os._exit(0)  # no clean shutdown, like a crashed learner
    time.sleep(3 * TIMEOUT_S)  # alive but never sends


def spawn(target, *args):
    process = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)
    process.start()
    return process


@pytest.mark.parametrize("backend,send_device,receive_device", LINKS)
def test_broadcast_loads_weights_into_an_engine(tiny_model_dir, backend, send_device, receive_device):
    from transformers import AutoModelForCausalLM

    port = free_port()
    results = multiprocessing.get_context("spawn").Queue()
    receiver = spawn(receive_into_engine, port, str(tiny_model_dir), backend, receive_device, results)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    new_weights = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    new_weights["lm_head.weight"] = new_weights["model.embed_tokens.weight"]  # tied
    sender = join(port, 0, backend, send_device, timeout_s=JOIN_S)
    sender.send(7, new_weights)
    version, loaded = results.get(timeout=60)
    receiver.join(timeout=30)
    sender.close()
    assert version == 7
    assert loaded.keys() == new_weights.keys()
    for name, tensor in new_weights.items():
        assert torch.equal(torch.from_numpy(loaded[name]), tensor), name


def receive_from(how: str) -> tuple[float, str]:
    """Join as the receiver with a misbehaving sender; seconds until receive() raised, and why."""
    port = free_port()
    started = multiprocessing.get_context("spawn").Event()
    joined = multiprocessing.get_context("spawn").Event()
    sender = spawn(join_then_misbehave, port, how, started, joined)
    # a spawned process takes seconds to import torch (more with CUDA): without this wait the join,
    # which shares the group's short timeout, could time out before the sender exists (seen on a GPU host)
    assert started.wait(JOIN_S), "the sender process did not start"
    receiver = join(port, rank=1)
    joined.set()
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError) as error:
            receiver.receive()
        return time.monotonic() - started, str(error.value)
    finally:
        sender.kill()
        sender.join()


def test_a_dead_sender_is_an_error():
    seconds, _ = receive_from("dies")
    assert seconds < TIMEOUT_S


def test_a_silent_sender_times_out():
    seconds, why = receive_from("stalls")
    assert "timed out" in why
    assert TIMEOUT_S - 0.5 < seconds < TIMEOUT_S + 5


@pytest.mark.skipif(not GPUS, reason="NCCL needs a GPU")
def test_nccl_group_sends_on_one_gpu():
    """World size 1: the NCCL communicator, its timeout option and the send path, on a real GPU."""
    group = join(free_port(), 0, "nccl", "cuda:0", world_size=1)
    weights = {"w": torch.randn(256, 256), "b": torch.arange(7, dtype=torch.int64)}
    group.send(3, weights)
    torch.cuda.synchronize()
    group.close()
