"""Where models live: a models directory with one model folder per name.

The directory is ``$ANNOVOX_MODELS_DIR``, by default ``~/.local/share/annovox/models``. ``register`` copies a
checked folder into it (a copy, not a link, so that the registry keeps working when the original is moved or
deleted); ``download`` fetches an official model from Hugging Face and installs it the same way. ``resolve``
turns a folder path or a registered name into the folder to load.

The name ``default`` is reserved for the model shipped inside the package (``inference/models/default``: a
compact network trained by ``inference.training`` that is fast on CPUs, licensed Apache-2.0). The engine runs
it whenever ``$ANNOVOX_MODEL`` names no other model (see ``configured_model``).
"""

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from inference.errors import ModelError
from inference.model_folder import ModelInfo, inspect_model_folder

MODELS_DIR_ENV = "ANNOVOX_MODELS_DIR"
MODEL_ENV = "ANNOVOX_MODEL"
DEFAULT_MODELS_DIR = Path("~/.local/share/annovox/models")
DEFAULT_NAME = "default"
# The built-in default model: the model folder here ships with the package.
BUILTIN_MODELS_DIR = Path(__file__).resolve().parent / "models"
_NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class Downloadable:
    """An official model that ``download`` can fetch: a folder of a Hugging Face model repository."""

    repo_id: str
    folder: str
    license: str
    license_url: str


DOWNLOADABLE = {
    "nnInteractive_v1.0": Downloadable(
        repo_id="MIC-DKFZ/nnInteractive",
        folder="nnInteractive_v1.0",
        license="CC BY-NC-SA 4.0",
        license_url="https://creativecommons.org/licenses/by-nc-sa/4.0/",
    ),
}


@dataclass(frozen=True)
class RegisteredModel:
    """A folder of the models directory; ``info`` is None and ``error`` says why when the folder is broken."""

    name: str
    path: Path
    info: ModelInfo | None
    error: str | None


def models_dir() -> Path:
    """The models directory: ``$ANNOVOX_MODELS_DIR`` or ``~/.local/share/annovox/models``."""
    return Path(os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR).expanduser()


def configured_model() -> str:
    """The model the application runs: ``$ANNOVOX_MODEL`` (a registered name or a folder), else "default"."""
    return os.environ.get(MODEL_ENV) or DEFAULT_NAME


def resolve(name_or_path: str | os.PathLike[str], *, root: Path | None = None) -> Path:
    """The model folder for a folder path or a registered name (in ``root``, by default models_dir())."""
    text = os.fspath(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    if text == DEFAULT_NAME:
        return _builtin_default()
    root = root or models_dir()
    if _is_name(text):
        if (root / text).is_dir():
            return root / text
        installed = ", ".join(model.name for model in list_models(root=root)) or "none"
        raise ModelError(
            f"no model named {text!r} in {root} (installed: {installed}); "
            "add one with `python -m inference download` or `python -m inference import`"
        )
    raise ModelError(f"{text} is neither a model folder nor the name of a registered model")


def _builtin_default() -> Path:
    path = BUILTIN_MODELS_DIR / DEFAULT_NAME
    if path.is_dir():
        return path
    raise ModelError(
        f"the default model is missing from this installation ({path}); reinstall Annovox, or load a "
        "registered model by name or a model folder by path (see `python -m inference list`)"
    )


def list_models(*, root: Path | None = None) -> list[RegisteredModel]:
    """The registered models by name, and the built-in default model if the package ships one."""
    root = root or models_dir()
    folders = (
        sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if root.is_dir()
        else []
    )
    if (BUILTIN_MODELS_DIR / DEFAULT_NAME).is_dir():
        folders.insert(0, BUILTIN_MODELS_DIR / DEFAULT_NAME)
    models = []
    for folder in folders:
        try:
            models.append(RegisteredModel(folder.name, folder, inspect_model_folder(folder), None))
        except ModelError as error:
            models.append(RegisteredModel(folder.name, folder, None, str(error)))
    return models


def register(
    path: str | os.PathLike[str], name: str | None = None, *, replace: bool = False, root: Path | None = None
) -> ModelInfo:
    """Check a model folder and copy it into the models directory as ``name`` (by default its folder name).

    Refuses a broken folder, a name that is taken (unless ``replace``) and the reserved name "default".
    """
    return _install(Path(path), name, replace=replace, root=root or models_dir(), move=False)


def download(
    model_id: str, *, replace: bool = False, root: Path | None = None, mirror: Path | None = None
) -> ModelInfo:
    """Fetch an official model (see DOWNLOADABLE) from Hugging Face, check it and install it as ``model_id``.

    The caller obtains the user's acceptance of the licence first. ``mirror``: a local folder laid out like
    the Hugging Face repository to copy from instead (an offline site's mirror, and the tests).
    """
    spec = DOWNLOADABLE.get(model_id)
    if spec is None:
        raise ModelError(f"unknown model {model_id!r}; downloadable: {', '.join(DOWNLOADABLE)}")
    root = root or models_dir()
    root.mkdir(parents=True, exist_ok=True)
    # Fetched next to its destination so that installing it is a rename, not a second copy of the weights.
    staging = Path(tempfile.mkdtemp(prefix=f".download-{model_id}-", dir=root))
    try:
        _fetch(spec, staging, mirror)
        fetched = staging / spec.folder
        if not fetched.is_dir():
            raise ModelError(f"{spec.repo_id} has no folder {spec.folder} (or the download did not complete)")
        return _install(fetched, model_id, replace=replace, root=root, move=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch(spec: Downloadable, staging: Path, mirror: Path | None) -> None:
    if mirror is not None:
        source = mirror / spec.folder
        if not source.is_dir():
            raise ModelError(f"the mirror {mirror} has no folder {spec.folder}")
        shutil.copytree(source, staging / spec.folder)
        return
    from huggingface_hub import snapshot_download  # only this command needs it

    try:
        # Shows huggingface_hub's progress bars; "*" also matches "/", so this takes the folder's subfolders.
        snapshot_download(spec.repo_id, allow_patterns=[f"{spec.folder}/*"], local_dir=staging)
    except Exception as error:  # network, HTTP and disk errors of several libraries: all mean "not fetched"
        raise ModelError(
            f"downloading {spec.folder} from Hugging Face ({spec.repo_id}) failed: {error}"
        ) from error


def _install(source: Path, name: str | None, *, replace: bool, root: Path, move: bool) -> ModelInfo:
    inspect_model_folder(source)
    name = source.resolve().name if name is None else name
    if not _is_name(name) or name == DEFAULT_NAME:
        raise ModelError(
            f"{name!r} cannot name a model: use letters, digits, '.', '_' and '-', and not 'default'"
        )
    destination = root / name
    if destination.exists() and destination.resolve() == source.resolve():
        return inspect_model_folder(destination)
    if destination.exists() and not replace:
        raise ModelError(
            f"a model named {name!r} is already registered at {destination} (use --replace to replace it)"
        )
    root.mkdir(parents=True, exist_ok=True)
    # Build the copy under a hidden name and rename it into place: a half-copied model is never visible.
    incoming = Path(tempfile.mkdtemp(prefix=f".incoming-{name}-", dir=root)) / name
    try:
        if move:
            source.rename(incoming)
        else:
            shutil.copytree(source, incoming)
        if destination.exists():
            outgoing = Path(tempfile.mkdtemp(prefix=f".outgoing-{name}-", dir=root))
            destination.rename(outgoing / name)
            shutil.rmtree(outgoing)
        incoming.rename(destination)
    finally:
        shutil.rmtree(incoming.parent, ignore_errors=True)
    return inspect_model_folder(destination)


def _is_name(text: str) -> bool:
    return bool(text) and not text.startswith(".") and set(text) <= _NAME_CHARACTERS
