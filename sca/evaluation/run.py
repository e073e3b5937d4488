"""One evaluation run end to end: predictions -> metrics.json (model + baselines) -> qualitative figure.

``evaluate_model`` is what ``sca evaluate`` and the notebooks call. Out folder::

    predictions.jsonl   one record per region (sca.evaluation.predict)
    metrics.json        model and baseline figures, protocol, settings (sca.evaluation.baselines)
    figure.png          a few images with prompts, SAM's best masks, predicted vs reference captions
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sca.data.records import ImageRecord
from sca.evaluation.baselines import BASELINES, evaluate_run
from sca.evaluation.metrics import DEFAULT_METRICS, MeteorScorer
from sca.evaluation.predict import GenerationSettings, predict_to_file, read_predictions
from sca.evaluation.protocols import check_sources, protocol_for_source

__all__ = ["eval_dataset", "evaluate_model", "infer_protocol"]


def infer_protocol(records: Sequence[ImageRecord], protocol: str | None = None,
                   split: str | None = None) -> tuple[str, str]:
    """(protocol, split) for evaluation records: given ones are checked against the records' source,
    missing ones come from the first record (``source`` -> protocol, ``split``)."""
    if len(records) == 0:
        raise ValueError("no evaluation records")
    first = records[0]
    if protocol is None:
        if not first.source:
            raise ValueError("the records name no source: give the protocol explicitly")
        protocol = protocol_for_source(first.source)
    check_sources(protocol, {first.source, records[len(records) - 1].source})
    return protocol, split or first.split or "test"


def eval_dataset(model, records, image_root: str | os.PathLike):
    """The eval ``RegionDataset`` for ``model``: SAM resize to the segmenter's input size, no jitter."""
    from sca.data.dataset import RegionDataset
    from sca.data.transforms import TransformConfig

    seg = model.segmenter
    transform = TransformConfig(image_size=seg.image_size, pixel_mean=tuple(seg.pixel_mean),
                                pixel_std=tuple(seg.pixel_std), jitter=False, hflip=0.0)
    return RegionDataset(records, image_root, train=False, transform=transform)


def evaluate_model(model, records: Sequence[ImageRecord] | str | os.PathLike, image_root: str | os.PathLike,
                   out_dir: str | os.PathLike, *, protocol: str | None = None, split: str | None = None,
                   train_records: Iterable[ImageRecord] | str | os.PathLike | None = None,
                   generation: GenerationSettings | None = None, batch_size: int = 1, num_workers: int = 2,
                   metrics: Iterable[str] = DEFAULT_METRICS, baselines: Iterable[str] = BASELINES,
                   figure_images: int = 4, progress: bool = True, settings: dict[str, Any] | None = None,
                   meteor: MeteorScorer | None = None, region_use: bool = True) -> dict[str, Any]:
    """Caption every region of ``records`` with ``model``, score it beside the baselines, draw the figure.

    records: a JSON Lines path or a sequence of ImageRecord (the evaluation split).
    Returns the metrics dict (also in ``out_dir/metrics.json``), with generation stats in its settings.
    region_use: add ``region_use`` (share of distinct captions; caption loss with true versus shuffled
    prompts, ``sca.evaluation.diagnostics``) — whether the model looks at its region at all — and, on
    synthetic sets, which attributes its captions state right (``attribute_accuracy``)."""
    from sca.training.collate import RegionCollator, make_loader

    out_dir = Path(out_dir)
    dataset = eval_dataset(model, records, image_root)
    protocol, split = infer_protocol(dataset.records, protocol, split)
    generation = generation or GenerationSettings()
    collator = RegionCollator(model.lm.require_tokenizer(), max_tokens=model.config.max_caption_tokens)
    loader = make_loader(dataset, collator, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    pred_path = out_dir / "predictions.jsonl"
    stats = predict_to_file(model, loader, pred_path, protocol=protocol, split=split, settings=generation,
                            progress=progress)
    extra = {}
    if region_use:
        # Does the model look at its region? (sca.evaluation.diagnostics; cheap next to beam search)
        from sca.evaluation.diagnostics import attribute_accuracy, distinct_share, prompt_shuffle_gap

        candidates = read_predictions(pred_path, protocol=protocol).candidates()
        use = {"distinct_candidates": distinct_share(list(candidates.values()))}
        attributes = attribute_accuracy(candidates, dataset.records)
        if attributes:
            use["attributes"] = attributes
        try:
            use.update(prompt_shuffle_gap(model, loader))
        except ValueError as err:  # every image has a single region: nothing to shuffle
            use["skipped"] = str(err)
        extra["region_use"] = use
    result = evaluate_run(pred_path, out_dir, protocol=protocol, train_records=train_records,
                          eval_records=dataset.records, metrics=metrics, baselines=baselines, meteor=meteor,
                          settings={"generation": vars(generation), "prediction": stats.to_dict(),
                                    "model": model.config.to_dict(), **(settings or {})}, extra=extra)
    if figure_images > 0:
        from sca.evaluation.figures import save_predictions_figure

        save_predictions_figure(out_dir / "figure.png", read_predictions(pred_path, protocol=protocol), dataset,
                                model=model, num_images=figure_images)
    return result

