"""The smoke configuration: params.yaml shrunk to seconds per stage (same keys, same code paths)."""

SMOKE = {
    "data": {"captions": {"train": 8, "val": 4, "test": 4}, "weak": {"train": 8}, "lm_corpus_scenes": 40,
             "scene_size": [64, 80], "workers": 1},
    "segmenter": {"model": {"image_size": 64}, "train": {"max_steps": 3, "images_per_step": 4, "regions_per_image": 2,
                                                         "save_every": 0, "log_every": 1, "warmup_steps": 1},
                  "options": {"eval_images": 2}},
    "language_model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                       "train": {"max_steps": 3, "images_per_step": 16, "save_every": 0, "log_every": 1,
                                 "warmup_steps": 1}},
    "model": {"num_mixer_layers": 1},
    "pretrain": {"train": {"max_steps": 2, "images_per_step": 4, "regions_per_image": 2, "save_every": 0,
                           "log_every": 1, "warmup_steps": 1}},
    "finetune": {"train": {"max_steps": 2, "images_per_step": 4, "regions_per_image": 2, "save_every": 0,
                           "eval_every": 0, "log_every": 1, "warmup_steps": 1},
                 "eval": {"max_images": 2, "max_new_tokens": 4}},
    "evaluate": {"num_beams": 1, "max_new_tokens": 4, "figure_images": 1},
}
