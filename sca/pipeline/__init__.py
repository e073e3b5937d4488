"""The notebook-first pipeline: params.yaml sections -> stage functions (called by the notebooks)."""

from sca.pipeline.params import deep_update, load_params, load_section, repo_root

__all__ = ["deep_update", "load_params", "load_section", "repo_root"]
