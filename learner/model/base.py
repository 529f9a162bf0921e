"""The base models shipped in the repository, and the command that rebuilds them.

The warm-start (learner/model/warmstart.py) is not bit-reproducible across machines and thread
counts: float reductions run in another order, a few hundred SFT steps amplify the difference, and
the bases differ by several points of accuracy. So the bases the shipped configs warm-start are
built once and shipped, each with `manifest.json` (the recipe's cache key and the content hash):
`learner/model/default_base/` (the default config's, the built-in task) and `learner/model/code_base/`
(`cluster/configs/code.yaml`'s and the code suite's, the code task), 4.4 MB each (Hugging Face
weights, tokenizer, `warmstart.json`). Every machine then trains from the same base; the cache
under `model.cache_dir` still serves any other model or warm-start config.

A base is named by its content hash: SHA-256 over the name and SHA-256 of every file that defines
it (weights, model and generation config, tokenizer), not `warmstart.json` (it holds a wall time).

    python -m learner.model.base                             # check every shipped base against its manifest
    python -m learner.model.base --rebuild                   # warm-start the default base again and compare
    python -m learner.model.base --rebuild --base code_base  # the code task's
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

SHIPPED = Path(__file__).resolve().parent / "default_base"  # the default config's: the built-in task
SHIPPED_CODE = SHIPPED.parent / "code_base"                  # cluster/configs/code.yaml's: the code task
MANIFEST = "manifest.json"
NOT_HASHED = {MANIFEST, "warmstart.json"}


class BaseModelError(ValueError):
    """The shipped base does not match its manifest (edited, truncated, or a bad checkout)."""


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def content_hash(model_dir: str | Path) -> str:
    """The base's identity: every defining file's name and SHA-256, hashed in name order."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).iterdir()):
        if path.is_file() and path.name not in NOT_HASHED:
            digest.update(f"{path.name}:{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def manifest(model_dir: Path | None = None) -> dict:
    """The manifest of `model_dir`, by default of the shipped base."""
    return json.loads(((model_dir or SHIPPED) / MANIFEST).read_text())


def shipped_bases() -> list[Path]:
    return [SHIPPED, SHIPPED_CODE]


def shipped_for(key: str) -> Path | None:
    """The shipped base that the warm-start cache key `key` names, else None; checked against its
    manifest, so a damaged checkout is an error, never a silently different base."""
    for model_dir in shipped_bases():
        if not (model_dir / MANIFEST).is_file() or manifest(model_dir)["cache_key"] != key:
            continue
        expected, found = manifest(model_dir)["sha256"], content_hash(model_dir)
        if found != expected:
            raise BaseModelError(
                f"the shipped base {model_dir} hashes to {found[:12]}, its manifest says {expected[:12]}: its files were "
                f"changed. Restore them (git checkout learner/model/{model_dir.name}) or rebuild "
                f"(python -m learner.model.base --rebuild --base {model_dir.name})"
            )
        return model_dir
    return None


def write_manifest(model_dir: Path, cache_key: str, overrides: list[str], shipped_as: str = SHIPPED.name) -> dict:
    """Name the base in `model_dir` by its hash and the recipe (config overrides, cache key) it was built by;
    `shipped_as`: the shipped base it is, or is rebuilt as."""
    record = {
        "cache_key": cache_key,
        "sha256": content_hash(model_dir),
        "recipe": {"config_overrides": overrides, "command": f"python -m learner.model.base --rebuild --base {shipped_as}"},
        "built": json.loads((model_dir / "warmstart.json").read_text()),
    }
    (model_dir / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
    return record


def held_out_metrics(model_dir: Path, cfg, log: Callable[[str], None]) -> dict[str, float]:
    """The run's base evaluation (greedy, the held-out split, both attempts), in-process on transformers."""
    from actors.engines.base import SamplingParams
    from actors.engines.hf_engine import TransformersEngine
    from actors.rollout import RolloutWorker
    from graders.pool import GraderWorker
    from graders.registry import make_task
    from learner.driver.metrics import trace_metrics

    task = make_task(cfg.task.name, cfg.task.params)
    start = cfg.task.eval_offset
    problems = task.eval_problems(start + cfg.task.eval_size)[start:]
    worker = RolloutWorker(TransformersEngine.from_pretrained(str(model_dir)), task)
    info, _ = worker.rollout(problems, 1, SamplingParams(cfg.eval.max_new_tokens or cfg.score.max_new_tokens, temperature=0.0))
    info.set_grades(GraderWorker(cfg.task.name, cfg.task.params).grade_traces(problems, info))
    m = trace_metrics(info.meta)
    log(f"{model_dir}: Acc@t1 {m['acc_t1']:.1f} Acc@t2 {m['acc_t2']:.1f} Δ {m['delta']:+.1f}")
    return m


def weight_difference(a: Path, b: Path) -> float:
    """The largest absolute difference between two bases' weights (inf if their tensors differ in shape)."""
    from safetensors.numpy import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    if wa.keys() != wb.keys() or any(wa[k].shape != wb[k].shape for k in wa):
        return float("inf")
    return max(float(abs(wa[k].astype("float64") - wb[k].astype("float64")).max()) for k in wa)


def rebuild(out: Path, log: Callable[[str], None], shipped: Path | None = None) -> bool:
    """Warm-start a shipped base (by default the default config's) again from its recipe into `out`;
    True if it is the same base."""
    from graders.registry import make_task
    from learner.model.warmstart import build_base, cache_key
    from protos import load_config

    shipped = shipped or SHIPPED
    recipe = manifest(shipped)
    cfg = load_config(None, recipe["recipe"]["config_overrides"], check_paths=False)
    if cache_key(cfg) != recipe["cache_key"]:
        log(f"the recipe now gives cache key {cache_key(cfg)}, the shipped base was built as {recipe['cache_key']}: "
            "the warm-start code or the default config changed since")
    started = time.perf_counter()
    build_base(cfg, make_task(cfg.task.name, cfg.task.params), out, log)
    write_manifest(out, cache_key(cfg), recipe["recipe"]["config_overrides"], shipped.name)
    built = content_hash(out)
    log(f"rebuilt in {time.perf_counter() - started:.0f}s: {out} sha256 {built[:12]}; shipped {recipe['sha256'][:12]}")
    if built == recipe["sha256"]:
        log("identical to the shipped base, byte for byte")
        return True
    log(f"differs from the shipped base: weights up to {weight_difference(out, shipped):.3g} apart. The warm-start is "
        "not bit-reproducible across machines and thread counts; the evaluation of each (greedy, held-out):")
    shipped_m, rebuilt_m = held_out_metrics(shipped, cfg, log), held_out_metrics(out, cfg, log)
    log("rebuilt minus shipped: " + "  ".join(f"{k} {rebuilt_m[k] - shipped_m[k]:+.1f}"
                                              for k in ("acc_t1", "acc_t2", "delta")))
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learner.model.base", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rebuild", action="store_true",
                        help="warm-start a shipped base again from its recipe (10-40 minutes on 2 cores) and compare")
    parser.add_argument("--base", choices=[d.name for d in shipped_bases()], default=SHIPPED.name,
                        help="with --rebuild: which shipped base (default: %(default)s)")
    parser.add_argument("--out", help="with --rebuild: where the rebuilt base goes (default: a temporary directory)")
    args = parser.parse_args(argv)
    from learner.driver.startup import log

    intact = True
    for model_dir in shipped_bases():
        recipe, found = manifest(model_dir), content_hash(model_dir)
        log(f"shipped base {model_dir}: cache key {recipe['cache_key']}, sha256 {found[:12]} "
            f"({'matches' if found == recipe['sha256'] else 'DOES NOT MATCH'} its manifest)")
        intact &= found == recipe["sha256"]
    if not intact:
        return 1
    if not args.rebuild:
        return 0
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="score-base-"))
    out.mkdir(parents=True, exist_ok=True)
    return 0 if rebuild(out, log, next(d for d in shipped_bases() if d.name == args.base)) else 2

if __name__ == "__main__":
    sys.exit(main())
