"""The user-facing layer: the Captioner (Python API), anything mode, the command line's caption /
everything / demo commands, the gradio demo and the result pictures. It sits on the model, data and
engine layers (``sca.models``, ``sca.data``, ``sca.training``, ``sca.evaluation``) and nothing below
imports it."""
