"""Optional dependencies, imported where they are needed, with an error that says which extra installs them.

``rpbt[trading]`` brings gym-anytrading, pandas and matplotlib (``env.id: trading``: market data, the shipped
series, the equity-curve figure); ``rpbt[pb2]`` brings scikit-learn and threadpoolctl (``pbt.explore: pb2``);
``rpbt[report]`` brings matplotlib and pandas (``rpbt report``, :func:`rpbt.report.load_run`, the spike study's
figure); ``rpbt[all]`` the three. ``import rpbt`` and the default job import none of them.
``rpbt[export]`` brings onnx and onnxruntime (``rpbt export --format onnx``); ``rpbt[video]`` brings moviepy and
pygame (``rpbt evaluate --video``: Gymnasium's ``RecordVideo`` writes MP4 files with moviepy, and the classic-control
environments, POPGym's CartPoles among them, draw their frames with pygame); ``rpbt[ray]`` brings Ray;
``rpbt[minigrid]`` brings MiniGrid (``env.entry_point: rpbt.envs.minigrid:image_env``).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the ``pip install 'rpbt[EXTRA]'`` that adds it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` saying that ``purpose`` needs ``rpbt[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(f"{purpose} needs the Python package {module!r}, which is not installed ({err}); "
                                f"install it with: pip install 'rpbt[{extra}]'") from None
