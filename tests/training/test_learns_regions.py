"""Training makes a captioner that looks at its region: on the embedded default's kind of data (the
synthetic caption set) with tiny registered models, the loss falls and CIDEr-D ends far above the
most-frequent-caption baseline scored by the same code, with region-specific captions."""

import json

import pytest

from sca.data.synthetic import SyntheticConfig, generate_synthetic


@pytest.fixture(scope="module")
def word_lm(tmp_path_factory):
    """A random word-level GPT-2 over the synthetic phrases (the embedded LM's kind, untrained)."""
    from sca.data.io import read_records
    from sca.models.caption_lm import build_word_tokenizer, new_caption_lm

    root = tmp_path_factory.mktemp("captions")
    generate_synthetic(root, SyntheticConfig(flavour="captions", seed=0, splits={"train": 160, "test": 24},
                                             image_size=(64, 96), objects=(1, 3)), workers=1)
    records = read_records(root / "train.jsonl.gz")
    tok = build_word_tokenizer(p for r in records for g in r.regions for p in g.phrases)
    folder = root / "lm"
    new_caption_lm(tok, hidden_size=64, num_layers=2, num_heads=2, dropout=0.0).save_pretrained(folder)
    tok.save_pretrained(folder)
    return root, folder


def test_training_lowers_the_loss_and_beats_the_trivial_baseline_by_a_margin(word_lm, tmp_path):
    from sca.evaluation.predict import GenerationSettings
    from sca.evaluation.run import evaluate_model
    from sca.models.hub import from_pretrained
    from sca.training.run import run_training

    root, lm = word_lm
    result = run_training(
        model={"image_encoder": {"name": "tiny-sam", "image_size": 64, "init": "sam"},
               "language_model": {"name": "causal-lm", "weights": str(lm)},
               "num_mixer_layers": 2, "freeze_lm": False},
        data={"train_records": str(root / "train.jsonl.gz"), "images": str(root), "jitter": False, "hflip": 0.0},
        train={"max_steps": 150, "images_per_step": 16, "regions_per_image": 16, "lr": 3e-3, "lm_lr": 3e-3,
               "warmup_steps": 10, "log_every": 10, "num_workers": 0, "seed": 0, "use_embedding_cache": True,
               "torch_threads": 2},
        output_dir=tmp_path / "run", progress=False)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.6 * losses[0], losses

    metrics = evaluate_model(from_pretrained(tmp_path / "run" / "model").eval(), root / "test.jsonl.gz", root,
                             tmp_path / "eval", train_records=root / "train.jsonl.gz", metrics=("CIDEr-D",),
                             baselines=("most-frequent",), generation=GenerationSettings(num_beams=1, max_new_tokens=20),
                             figure_images=0, progress=False, num_workers=0)
    model, baseline = metrics["model"]["scores"]["CIDEr-D"], metrics["baselines"]["most-frequent"]["scores"]["CIDEr-D"]
    use = metrics["region_use"]
    print(json.dumps({"model": model, "most-frequent": baseline, "region_use": use}))
    assert model > 2.0 * baseline + 10, (model, baseline)  # far above, not just above
    assert use["distinct_candidates"] > 0.2 and use["loss_gap"] > 0.1, use  # captions follow the region
