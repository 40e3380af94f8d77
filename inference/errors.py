"""The engine's exceptions: everything it raises on purpose derives from EngineError."""


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class ModelError(EngineError):
    """A missing or broken model folder, an architecture the engine cannot build, or an unusable device."""


class PromptError(EngineError, ValueError):
    """A prompt the session refuses (outside the image, empty, degenerate, wrong type); nothing changes."""
