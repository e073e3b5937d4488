"""sca: Segment and Caption Anything (Huang et al., CVPR 2024), notebook-first and reproducible."""

__version__ = "0.1.0"
