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

On a GPU machine the same command runs in minutes (``--mixed-precision fp16`` or ``bf16`` there).
"""

from __future__ import annotations

import argparse
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


def write_sources(folder: str | os.PathLike) -> dict[str, Path]:
    """The fixture copies, each in the layout a user's copy has: {paper.yaml dataset name: folder}."""
    from sca.data.fixtures import write_o365, write_refer, write_vg, write_vg_glamm

    folder = Path(folder)
    return {"vg": write_vg(folder / "visual_genome"), "vg-glamm": write_vg_glamm(folder / "glamm"),
            "o365": write_o365(folder / "objects365", layout="mmdetection"),
            "refcocog": write_refer(folder / "refer_data", layout="refer-toolkit")}


def paper_smoke_params(paper: dict[str, Any], sources: dict[str, Path], *, image_encoder: str = "sam-vit-h",
                       lm: str = "gpt2-large", steps: int = 2, mixed_precision: str = "auto") -> dict[str, Any]:
    """``paper`` (configs/paper.yaml) with random weights, the fixture sources and a few steps."""
    datasets = []
    for item in paper["data"]["datasets"]:
        if item["name"] not in sources:
            raise ValueError(f"no fixture source for paper dataset {item['name']!r}; have {sorted(sources)}")
        datasets.append({**item, "from": str(sources[item["name"]])})
    train = {"max_steps": steps, "images_per_step": 1, "regions_per_image": 4, "warmup_steps": 1, "log_every": 1,
             "save_every": 1, "num_workers": 0, "mixed_precision": mixed_precision}
    changes = {
        "data": {"datasets": datasets},
        "model": {"image_encoder": {"name": image_encoder, "weights": None},
                  "language_model": {"name": lm, "weights": None}},
        "pretrain": {"train": train, "launch": {"num_processes": 1}},
        "finetune": {"train": {**train, "eval_every": 0}, "launch": {"num_processes": 1},
                     "eval": {"max_images": 1, "max_new_tokens": 4}},
        "evaluate": {"num_beams": 3, "max_new_tokens": 4, "figure_images": 1, "num_workers": 0},
    }
    return deep_update(paper, changes)


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
                    steps: int = 2, mixed_precision: str = "auto", threads: int | None = None) -> dict[str, Any]:
    """Copy the repository into ``workdir/repo``, write the sources into ``workdir/sources``, write the
    smoke's params.yaml and run ``dvc repro`` there. Returns {"seconds", "repo", "stdout"}; raises
    RuntimeError with the output's tail when a stage fails."""
    workdir = Path(workdir)
    repo = workdir / "repo"
    repo.mkdir(parents=True, exist_ok=False)
    copy_repository(repo)
    sources = write_sources(workdir / "sources")
    paper = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    params = paper_smoke_params(paper, sources, image_encoder=image_encoder, lm=lm, steps=steps,
                                mixed_precision=mixed_precision)
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
    return {"seconds": seconds, "repo": repo, "stdout": out.stdout}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-encoder", default="sam-vit-h")
    ap.add_argument("--lm", default="gpt2-large")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "fp16", "bf16"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--keep", default=None, help="work in this (new) folder and keep it (default: a temporary one)")
    args = ap.parse_args(argv)
    options = dict(image_encoder=args.image_encoder, lm=args.lm, steps=args.steps,
                   mixed_precision=args.mixed_precision, threads=args.threads)
    if args.keep:
        result = run_paper_smoke(args.keep, **options)
    else:
        with tempfile.TemporaryDirectory(prefix="sca-paper-smoke-") as tmp:
            result = run_paper_smoke(tmp, **options)
    stages = [line.split("'")[1] for line in result["stdout"].splitlines() if line.startswith("Running stage")]
    print(f"paper smoke ({args.image_encoder} + {args.lm}, random weights): dvc repro ran {', '.join(stages)} "
          f"in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
