"""The public import path of the Python API: ``from sca.api import Captioner``. The code lives in
``sca.app.api`` (the user-facing layer, ``sca/app/``)."""

from sca.app.api import *  # noqa: F403
from sca.app.api import __all__  # noqa: F401
