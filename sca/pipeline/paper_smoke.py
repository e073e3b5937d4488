"""The paper configuration at its real shapes, end to end, on a few local files.

``configs/paper.yaml`` with two changes only: the hub weights become random weights of the same
architectures (SAM ViT-H at 1024 px, GPT2-large, the 12-layer mixer), and the datasets are the
format-exact fixture copies of ``sca.data.fixtures`` (Visual Genome with DenseCap's split, GLaMM's
VG-sub file, Objects365 as mmdetection keeps it, the refer toolkit's RefCOCOg), fed to the data stage
through ``from:`` as a user's own copies are. Steps, images and tokens are cut to a few; every stage
of ``dvc repro`` runs (data -> weak pretraining -> fine-tuning -> evaluation on the VG-full, VG-sub
and RefCOCOg protocols -> tour -> results) in a temporary copy of the repository:

    .venv/bin/python -m sca.pipeline.paper_smoke                       # ViT-H + GPT2-large (CPU: tens of minutes)
    .venv/bin/python -m sca.pipeline.paper_smoke --image-encoder sam-vit-b --lm gpt2 --keep runs/paper-smoke

What the paper's runs use is exercised: bf16 (``--mixed-precision``), gradient checkpointing, weak
pretraining under the DeepSpeed ZeRO-2 accelerate launch, the embedding cache at full size in
fine-tuning (its bytes per image printed), and an exact resume of fine-tuning from a checkpoint.
On a GPU machine the same command runs in minutes (``--mixed-precision fp16`` there, as the
reference runs).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from sca.pipeline.params import deep_update

__all__ = ["copy_repository", "paper_smoke_params", "run_paper_smoke", "write_sources"]

ROOT = Path(__file__).resolve().parents[2]
DEEPSPEED_ZERO2 = "configs/accelerate/deepspeed_zero2.yaml"


def write_sources(folder: str | os.PathLike) -> dict[str, Path]:
    """The fixture copies, each in the layout a user's copy has: {paper.yaml dataset name: folder}."""
    from sca.data.fixtures import write_o365, write_refer, write_vg, write_vg_glamm

    folder = Path(folder)
    return {"vg": write_vg(folder / "visual_genome"), "vg-glamm": write_vg_glamm(folder / "glamm"),
            "o365": write_o365(folder / "objects365", layout="mmdetection"),
            "refcocog": write_refer(folder / "refer_data", layout="refer-toolkit")}


def paper_smoke_params(paper: dict[str, Any], sources: dict[str, Path], *, image_encoder: str = "sam-vit-h",
                       lm: str = "gpt2-large", steps: int = 2, mixed_precision: str = "bf16",
                       deepspeed: bool | None = None) -> dict[str, Any]:
    """``paper`` (configs/paper.yaml) with random weights, the fixture sources and a few steps.

    What the paper's runs use is kept: gradient checkpointing, and weak pretraining under the
    accelerate launch with the DeepSpeed ZeRO-2 config file (one process: without GPUs accelerate
    gives a DeepSpeed launch no process group; ``deepspeed`` None: when it is installed), with
    ``mixed_precision`` (DeepSpeed's own bf16 / fp16). Fine-tuning runs in-process with autocast at
    ``mixed_precision`` and, to exercise the embedding cache at full size, without augmentation
    (the cache needs a run whose images are not jittered or flipped)."""
    datasets = []
    for item in paper["data"]["datasets"]:
        if item["name"] not in sources:
            raise ValueError(f"no fixture source for paper dataset {item['name']!r}; have {sorted(sources)}")
        datasets.append({**item, "from": str(sources[item["name"]])})
    if deepspeed is None:
        deepspeed = importlib.util.find_spec("deepspeed") is not None
    train = {"max_steps": steps, "images_per_step": 1, "regions_per_image": 4, "warmup_steps": 1, "log_every": 1,
             "save_every": 1, "num_workers": 0, "mixed_precision": mixed_precision}
    pretrain_launch = {"num_processes": 1}
    if deepspeed:
        pretrain_launch["config_file"] = paper["pretrain"]["launch"].get("config_file", DEEPSPEED_ZERO2)
    changes = {
        "data": {"datasets": datasets},
        "model": {"image_encoder": {"name": image_encoder, "weights": None},
                  "language_model": {"name": lm, "weights": None}},
        "pretrain": {"train": train},
        "finetune": {"train": {**train, "eval_every": 0, "use_embedding_cache": True},
                     "data": {"jitter": False, "hflip": 0.0}, "eval": {"max_images": 1, "max_new_tokens": 4}},
        "evaluate": {"num_beams": 3, "max_new_tokens": 4, "figure_images": 1, "num_workers": 0},
    }
    params = deep_update(paper, changes)
    # Launches are replaced, not merged (fine-tuning keeps no config_file).
    params["pretrain"]["launch"], params["finetune"]["launch"] = pretrain_launch, {"num_processes": 1}
    return params


def copy_repository(dst: Path, root: Path = ROOT) -> None:
    """The tracked and new (not ignored) files of ``root``, tests left out, into ``dst``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = root / rel
        if src.is_file() and not rel.startswith("tests/"):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def run_paper_smoke(workdir: str | os.PathLike, *, image_encoder: str = "sam-vit-h", lm: str = "gpt2-large",
                    steps: int = 2, mixed_precision: str = "bf16", deepspeed: bool | None = None,
                    threads: int | None = None) -> dict[str, Any]:
    """Copy the repository into ``workdir/repo``, write the sources into ``workdir/sources``, write the
    smoke's params.yaml and run ``dvc repro`` there; then resume the fine-tuning from its next-to-last
    checkpoint (``check_resume``). Returns {"seconds", "repo", "stdout", "resume", "cache"}; raises
    RuntimeError with the output's tail when a stage fails."""
    workdir = Path(workdir)
    repo = workdir / "repo"
    repo.mkdir(parents=True, exist_ok=False)
    copy_repository(repo)
    sources = write_sources(workdir / "sources")
    paper = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    params = paper_smoke_params(paper, sources, image_encoder=image_encoder, lm=lm, steps=steps,
                                mixed_precision=mixed_precision, deepspeed=deepspeed)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "sca", "GIT_AUTHOR_EMAIL": "sca@localhost", "GIT_COMMITTER_NAME": "sca",
           "GIT_COMMITTER_EMAIL": "sca@localhost"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "paper smoke"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env, capture_output=True)
    t0 = time.perf_counter()
    out = subprocess.run([str(bin_dir / "dvc"), "repro"], cwd=repo, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"paper smoke: dvc repro failed after {seconds:.0f} s:\n{(out.stdout + out.stderr)[-6000:]}")
    return {"seconds": seconds, "repo": repo, "stdout": out.stdout, "params": params,
            "resume": check_resume(repo, workdir / "resumed", env=env), "cache": cache_cost(repo / "runs" / "finetune")}


def check_resume(repo: Path, copy: Path, *, env: dict[str, str], stage: str = "finetune") -> dict[str, Any]:
    """Cut a finished training stage back to its next-to-last checkpoint (in a copy) and run it again
    with ``sca train``: it must resume there and end at the same weights. Returns the step it resumed
    from, the largest weight difference and the seconds the resumed run took."""
    from safetensors.torch import load_file

    run = repo / "runs" / stage
    shutil.copytree(run, copy)
    steps = sorted(p.name for p in (copy / "checkpoints").glob("step-*"))
    if len(steps) < 2:
        raise RuntimeError(f"paper smoke: {stage} kept {len(steps)} checkpoint(s); resume needs two (save_every 1)")
    shutil.rmtree(copy / "checkpoints" / steps[-1])
    shutil.rmtree(copy / "model")
    (copy / "checkpoints" / "latest").write_text(steps[-2] + "\n")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sca.cli", "train", "--config", str(run / "config.yaml"),
                          "--output", str(copy)], cwd=repo, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"paper smoke: resuming {stage} failed:\n{(out.stdout + out.stderr)[-4000:]}")
    if "resuming from" not in out.stdout + out.stderr:
        raise RuntimeError(f"paper smoke: {stage} did not resume from {steps[-2]}:\n{(out.stdout + out.stderr)[-2000:]}")
    first, again = load_file(str(run / "model" / "model.safetensors")), load_file(str(copy / "model" / "model.safetensors"))
    if set(first) != set(again):
        raise RuntimeError(f"paper smoke: the resumed {stage} saved other tensors ({sorted(set(first) ^ set(again))[:5]})")
    diff = max(float((first[k].float() - again[k].float()).abs().max()) for k in first)
    return {"resumed_from": steps[-2], "max_abs_diff": diff, "seconds": seconds}


def cache_cost(run: Path) -> dict[str, Any]:
    """The embedding cache a training stage wrote: entries and bytes per image."""
    files = list((run / "embedding-cache").rglob("*.safetensors"))
    size = sum(f.stat().st_size for f in files)
    return {"images": len(files), "bytes_per_image": size / len(files) if files else 0.0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-encoder", default="sam-vit-h")
    ap.add_argument("--lm", default="gpt2-large")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--mixed-precision", default="bf16", choices=["no", "fp16", "bf16"],
                    help="both training stages (fp16 needs a GPU: neither DeepSpeed nor accelerate run it on a CPU)")
    ap.add_argument("--no-deepspeed", dest="deepspeed", action="store_false", default=None,
                    help="weak pretraining in-process instead of under the DeepSpeed ZeRO-2 launch")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--keep", default=None, help="work in this (new) folder and keep it (default: a temporary one)")
    args = ap.parse_args(argv)
    options = dict(image_encoder=args.image_encoder, lm=args.lm, steps=args.steps,
                   mixed_precision=args.mixed_precision, deepspeed=args.deepspeed, threads=args.threads)
    if args.keep:
        result = run_paper_smoke(args.keep, **options)
    else:
        with tempfile.TemporaryDirectory(prefix="sca-paper-smoke-") as tmp:
            result = run_paper_smoke(tmp, **options)
    stages = [line.split("'")[1] for line in result["stdout"].splitlines() if line.startswith("Running stage")]
    launch = result["params"]["pretrain"]["launch"].get("config_file") or "in-process"
    print(f"paper smoke ({args.image_encoder} + {args.lm}, random weights, {args.mixed_precision}, pretraining "
          f"launch: {launch}): dvc repro ran {', '.join(stages)} in {result['seconds']:.0f} s")
    r, c = result["resume"], result["cache"]
    print(f"fine-tuning resumed from {r['resumed_from']} in {r['seconds']:.0f} s: largest weight difference "
          f"{r['max_abs_diff']:.3g}; embedding cache {c['bytes_per_image'] / 2**20:.2f} MiB per image ({c['images']} images)")


if __name__ == "__main__":
    main()
