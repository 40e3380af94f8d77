"""The Annovox inference engine: promptable 3D segmentation (the nnInteractive method).

A plain Python library that never imports Django (see DESIGN.md). Models: docs/engine.md.
"""

from inference.errors import EngineError, ModelError, PromptError
from inference.model import InteractionConfig, Model, load_model
from inference.session import Result, Session

__all__ = [
    "EngineError",
    "InteractionConfig",
    "Model",
    "ModelError",
    "PromptError",
    "Result",
    "Session",
    "load_model",
]
