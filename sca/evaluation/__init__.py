"""Evaluation: region captions for every ground-truth prompt, COCO caption metrics, trivial baselines.

- ``metrics``: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE (when its jars are present) via pycocoevalcap.
- ``predict``: one predictions record per region (JSON Lines, written atomically).
- ``protocols``: named protocols (vg-full, vg-sub, refcoco, ..., synthetic-*) never mixed.
- ``baselines``: most-frequent / per-category / box-bin captions and ``evaluate_run`` -> metrics.json.
- ``figures``: the qualitative figure of a run. ``run``: ``evaluate_model`` end to end.
- ``commands``: ``sca evaluate``.
"""
