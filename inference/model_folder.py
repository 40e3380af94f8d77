"""Model folders in the format of the official nnInteractive weights, read without running anything.

A model folder holds:

- ``plans.json``: nnU-Net v2 plans; the configuration named by the checkpoint gives the patch size and the
  architecture (a dynamic-network-architectures class and its keyword arguments).
- ``dataset.json``: the image channels (``channel_names``, or ``modality`` in older files).
- ``inference_info.json`` (newer) or ``inference_session_class.json`` (older): how prompts are encoded.
  The newer file may also declare capabilities and the channel layout; the older one is either a JSON object
  with the encoding settings or a bare class name (then older prompts fade by 0.9 instead of 0.98).
- exactly one ``fold_*/checkpoint_final.pth``: a torch checkpoint with ``network_weights``, ``trainer_name``
  and ``init_args`` (whose ``configuration`` names the plans configuration).
- ``LICENSE`` (optional): its first non-empty line names the licence.

The rules follow what the reference package (``nninteractive`` 2.6.0) accepts, so that a folder it loads loads
here; the few deliberate differences are listed in docs/engine.md.
"""

import json
import pickle
import pydoc
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet, ResidualUNet
from torch import nn

from inference.errors import ModelError

PLANS_FILE = "plans.json"
DATASET_FILE = "dataset.json"
# Written by our trainer (inference/training): data, steps, seed, commit.
PROVENANCE_FILE = "provenance.json"
INFO_FILE = "inference_info.json"
LEGACY_INFO_FILE = "inference_session_class.json"
CHECKPOINT_FILE = "checkpoint_final.pth"
LICENSE_FILE = "LICENSE"

OFFICIAL_LICENSE = "CC BY-NC-SA 4.0"
UNKNOWN_LICENSE = "unknown"
# The reference marks its own v1 weights by these two names; such a folder without LICENSE is CC BY-NC-SA 4.0.
_OFFICIAL_DATASET = "Dataset225_nnInteractiveV2"
_OFFICIAL_CONFIGURATION = "3d_fullres_ps192_bs24"

# inference_info.json may demand a session class and a minimum version of the reference package; this engine
# implements the encoding of that class as of this version.
REFERENCE_SESSION_CLASS = "nnInteractiveInferenceSession"
REFERENCE_SESSION_VERSION = (2, 6, 0)

INTERACTION_KINDS = ("points", "bbox2d", "bbox3d", "scribble", "lasso")
# Short channel names; a channel shared by several kinds is named after the first of them in this order.
_CHANNEL_LABELS = {
    "bbox2d": "bbox",
    "bbox3d": "bbox",
    "lasso": "lasso",
    "points": "point",
    "scribble": "scribble",
}
# Encoding of the v1 weights, and what an older folder that declares nothing gets.
_DEFAULT_MAPPING: dict[str, tuple[int, int]] = {
    "bbox2d": (1, 2),
    "bbox3d": (1, 2),
    "lasso": (1, 2),
    "points": (3, 4),
    "scribble": (5, 6),
}
_DEFAULT_SUPPORTED = {"points": True, "bbox2d": True, "bbox3d": False, "scribble": True, "lasso": True}
_DEFAULT_INTERACTION_CHANNELS = 6  # without prev_seg
_LEGACY_CLASS_NAME_DECAY = 0.9

# Architectures the engine builds: nnU-Net's U-Nets. The plans name them by module path, which has moved
# between versions of dynamic-network-architectures, so only the class name counts.
_ARCHITECTURES: dict[str, type[nn.Module]] = {
    cls.__name__: cls for cls in (ResidualEncoderUNet, PlainConvUNet, ResidualUNet)
}
# Plans name layer classes (conv_op, norm_op, nonlin...) by dotted path; only these packages may be named.
_IMPORTABLE_PREFIXES = ("torch.nn.", "dynamic_network_architectures.")


@dataclass(frozen=True)
class InteractionConfig:
    """How a model wants its prompts encoded. The defaults are those of the v1.0 weights.

    Channel indices count the interaction channels only: index 0 is the first network input channel after the
    image channel(s). Each prompt kind writes its positive prompts into the first channel of its pair and its
    negative prompts into the second.
    """

    channels: tuple[str, ...] = ("prev_seg", "bbox+", "bbox-", "point+", "point-", "scribble+", "scribble-")
    prev_seg_channel: int = 0
    point_channels: tuple[int, int] = (3, 4)
    box_channels: tuple[int, int] = (1, 2)  # 2D boxes (one axis of size 1)
    box3d_channels: tuple[int, int] = (1, 2)
    lasso_channels: tuple[int, int] = (1, 2)
    scribble_channels: tuple[int, int] = (5, 6)
    point_radius: int = 4
    interaction_decay: float = 0.98  # weight of every older prompt per newer prompt
    preferred_scribble_thickness: tuple[int, int, int] = (2, 2, 2)  # stroke width per axis, in voxels
    pad_mode_image: str = "constant"
    supports_points: bool = True
    supports_2d_box: bool = True
    supports_3d_box: bool = False
    supports_scribble: bool = True
    supports_lasso: bool = True
    supports_initial_seg: bool = True
    supports_zero_shot_refinement: bool = True  # may refine a given mask without further prompts
    # Most full-resolution AutoZoom refinement patches per prompt on CPU (our key "cpu_refinement_patches";
    # None = the engine's CPU_MAX_REFINEMENT_PATCHES). A compact model declares a budget that keeps it
    # interactive on a laptop.
    cpu_refinement_patches: int | None = None

    def __post_init__(self) -> None:
        count = len(self.channels)
        indices = [self.prev_seg_channel, *self.point_channels, *self.box_channels, *self.box3d_channels]
        indices += [*self.lasso_channels, *self.scribble_channels]
        if any(not 0 <= index < count for index in indices):
            raise ModelError(f"interaction channel indices {indices} do not fit {count} channels")
        if not 0 < self.interaction_decay <= 1:
            raise ModelError(f"interaction_decay must be in (0, 1], not {self.interaction_decay}")
        if self.point_radius < 1 or min(self.preferred_scribble_thickness) < 1:
            raise ModelError("point_radius and preferred_scribble_thickness must be at least 1")
        if self.cpu_refinement_patches is not None and self.cpu_refinement_patches < 1:
            raise ModelError(f"cpu_refinement_patches must be at least 1, not {self.cpu_refinement_patches}")

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    @property
    def thin_channels(self) -> frozenset[int]:
        """Points and scribbles: widened before a zoomed-out crop is downsampled, so they do not fade away."""
        thin = (self.point_channels if self.supports_points else ()) + (
            self.scribble_channels if self.supports_scribble else ()
        )
        return frozenset(thin)


@dataclass(frozen=True)
class ModelInfo:
    """What a model folder says about itself; reading it loads no weights into memory."""

    name: str  # the folder's name
    # What follows "_v" at the end of the name ("nnInteractive_v1.0" -> "1.0"); for models our trainer made,
    # steps and commit from provenance.json ("2600-f907e4a"); else "unknown".
    version: str
    license: str
    path: Path
    patch_size: tuple[int, int, int]
    num_image_channels: int
    interaction: InteractionConfig
    architecture: str  # class name, e.g. ResidualEncoderUNet
    configuration: str  # plans configuration the checkpoint was trained with
    trainer_name: str
    dataset_name: str

    @property
    def num_input_channels(self) -> int:
        return self.num_image_channels + self.interaction.num_channels


@dataclass(frozen=True)
class ModelFolder:
    info: ModelInfo
    architecture: Mapping[str, Any]  # the plans' "architecture" entry
    checkpoint: Path


def inspect_model_folder(path: str | Path) -> ModelInfo:
    """Read and check a model folder: every file, and that the weights fit the network the plans describe.

    The checkpoint is memory-mapped, so this is quick even for the 400 MB official weights.
    """
    folder, checkpoint = open_model_folder(path, mmap=True)
    build_network(folder, checkpoint, torch.device("meta"))
    return folder.info


def open_model_folder(path: str | Path, *, mmap: bool = False) -> tuple[ModelFolder, dict[str, Any]]:
    """The folder's description and its checkpoint (``mmap``: see load_checkpoint); refuses broken folders."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path} is not a model folder (no such directory)")
    path = path.resolve()
    interaction = _read_interaction_config(path)
    plans = _read_json_object(path / PLANS_FILE)
    dataset = _read_json_object(path / DATASET_FILE)
    checkpoint_path = _find_checkpoint(path)
    checkpoint = load_checkpoint(checkpoint_path, mmap=mmap)
    configuration_name = checkpoint["init_args"]["configuration"]
    configuration = _resolve_configuration(plans, configuration_name, path / PLANS_FILE)
    if configuration.get("previous_stage") is not None:
        raise ModelError(
            f"{path / PLANS_FILE}: cascade configuration {configuration_name!r} is not supported"
        )
    architecture = configuration.get("architecture")
    if not isinstance(architecture, dict) or not isinstance(architecture.get("arch_kwargs"), dict):
        raise ModelError(
            f"{path / PLANS_FILE}: configuration {configuration_name!r} has no 'architecture' with "
            "'arch_kwargs' (plans older than nnU-Net v2.3 are not supported)"
        )
    class_name = str(architecture.get("network_class_name", "")).rsplit(".", 1)[-1]
    if class_name not in _ARCHITECTURES:
        raise ModelError(
            f"{path / PLANS_FILE}: unsupported architecture {architecture.get('network_class_name')!r} "
            f"(supported: {', '.join(sorted(_ARCHITECTURES))})"
        )
    patch_size = _patch_size(configuration.get("patch_size"), path / PLANS_FILE)
    _check_patch_fits_strides(patch_size, architecture["arch_kwargs"].get("strides"), path / PLANS_FILE)
    channel_names = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channel_names, dict) or not channel_names:
        raise ModelError(f"{path / DATASET_FILE}: no 'channel_names' naming the image channels")
    dataset_name = str(plans.get("dataset_name", ""))
    info = ModelInfo(
        name=path.name,
        version=_version(path),
        license=_read_license(path, dataset_name, configuration_name),
        path=path,
        patch_size=patch_size,
        num_image_channels=len(channel_names),
        interaction=interaction,
        architecture=class_name,
        configuration=configuration_name,
        trainer_name=checkpoint["trainer_name"],
        dataset_name=dataset_name,
    )
    return ModelFolder(info=info, architecture=architecture, checkpoint=checkpoint_path), checkpoint


def build_network(folder: ModelFolder, checkpoint: Mapping[str, Any], device: torch.device) -> nn.Module:
    """The network of the folder with the checkpoint's weights, float32, in eval mode, on ``device``.

    The network is built on the meta device and takes the checkpoint's tensors as its parameters, which skips
    the random initialisation (seconds for 100 M parameters) that loading would overwrite anyway.
    """
    info = folder.info
    with torch.device("meta"):
        network = network_from_architecture(
            folder.architecture, info.num_input_channels, info.path / PLANS_FILE
        )
    try:
        network.load_state_dict(checkpoint["network_weights"], strict=True, assign=True)
    except RuntimeError as error:
        raise ModelError(
            f"{folder.checkpoint}: the weights do not fit the network of {PLANS_FILE} "
            f"({info.num_input_channels} input channels): {str(error)[:1000]}"
        ) from error
    if device.type == "meta":
        return network
    if any(tensor.is_meta for tensor in (*network.parameters(), *network.buffers())):
        raise ModelError(f"{folder.checkpoint}: the network has tensors the checkpoint does not provide")
    network = network.to(device=device, dtype=torch.float32).eval()
    network.requires_grad_(False)
    return network


def network_from_architecture(
    architecture: Mapping[str, Any], input_channels: int, source: Path | str = PLANS_FILE
) -> nn.Module:
    """A network with two output classes (randomly initialised, on torch's current default device) from a
    plans "architecture" entry; ``source`` names the plans file in errors. Training builds its networks with
    this, so that every model it writes loads here."""
    kwargs = dict(architecture["arch_kwargs"])
    for key in architecture.get("_kw_requires_import", ()):
        if kwargs.get(key) is not None:
            kwargs[key] = _locate(kwargs[key], Path(source))
    kwargs["deep_supervision"] = False  # inference needs the full-resolution output only
    class_name = str(architecture.get("network_class_name", "")).rsplit(".", 1)[-1]
    if class_name not in _ARCHITECTURES:
        raise ModelError(f"{source}: unsupported architecture {architecture.get('network_class_name')!r}")
    try:
        return _ARCHITECTURES[class_name](input_channels=input_channels, num_classes=2, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, IndexError, RuntimeError) as error:
        raise ModelError(f"{source}: cannot build {class_name}: {error}") from error


# nnU-Net checkpoints log training curves as numpy scalars; rebuilding those (and their dtypes) is harmless.
# Pickles written with numpy 1.x name the scalar constructor by its old module path.
_NUMPY_SCALAR = np._core.multiarray.scalar  # type: ignore[attr-defined]
_SAFE_GLOBALS: list[Any] = [
    _NUMPY_SCALAR,
    (_NUMPY_SCALAR, "numpy.core.multiarray.scalar"),
    np.dtype,
    *(getattr(np.dtypes, name) for name in np.dtypes.__all__ if name.endswith("DType")),
]


def load_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint's contents, checked for the keys the engine needs.

    Loaded with ``weights_only=True``: tensors and plain data only, so a checkpoint cannot run code. ``mmap``
    maps the tensors from the file instead of reading them.
    """
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a torch checkpoint (torch.save's zip format)")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise ModelError(
            f"{path}: cannot be read as tensors and plain data only (weights_only): {str(error)[:600]}"
        ) from error
    except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ModelError(f"{path}: not a readable torch checkpoint: {error}") from error
    if not isinstance(checkpoint, dict):
        raise ModelError(f"{path}: a checkpoint must hold a dict, not {type(checkpoint).__name__}")
    missing = [key for key in ("network_weights", "trainer_name", "init_args") if key not in checkpoint]
    if missing:
        raise ModelError(f"{path}: checkpoint lacks {', '.join(missing)}")
    weights = checkpoint["network_weights"]
    if not isinstance(weights, Mapping) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        raise ModelError(f"{path}: 'network_weights' must map parameter names to tensors")
    if not isinstance(checkpoint["trainer_name"], str):
        raise ModelError(f"{path}: 'trainer_name' must be a string")
    init_args = checkpoint["init_args"]
    if not isinstance(init_args, dict) or not isinstance(init_args.get("configuration"), str):
        raise ModelError(f"{path}: 'init_args' must name the plans 'configuration'")
    return checkpoint


def _find_checkpoint(path: Path) -> Path:
    folds = sorted(child for child in path.iterdir() if child.is_dir() and child.name.startswith("fold_"))
    if len(folds) != 1:
        found = ", ".join(fold.name for fold in folds) or "none"
        raise ModelError(f"{path}: expected exactly one fold_* folder with {CHECKPOINT_FILE}, found {found}")
    checkpoint = folds[0] / CHECKPOINT_FILE
    if not checkpoint.is_file():
        raise ModelError(f"{checkpoint} is missing")
    return checkpoint


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ModelError(f"{path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{path}: not readable JSON: {error}") from error


def _read_json_object(path: Path) -> dict[str, Any]:
    content = _read_json(path)
    if not isinstance(content, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return content


def _read_interaction_config(path: Path) -> InteractionConfig:
    settings: dict[str, Any]
    capability: dict[str, Any] = {}
    decay_default = InteractionConfig.interaction_decay
    if (path / INFO_FILE).is_file():
        settings = capability = _read_json_object(path / INFO_FILE)
        _check_session_class(settings, path / INFO_FILE)
        source = path / INFO_FILE
    elif (path / LEGACY_INFO_FILE).is_file():
        source = path / LEGACY_INFO_FILE
        content = _read_json(source)
        if isinstance(content, str):  # a bare class name: the oldest form
            settings, decay_default = {}, _LEGACY_CLASS_NAME_DECAY
        elif isinstance(content, dict):
            settings = content  # the older file's capability keys are not read, as by the reference
        else:
            raise ModelError(f"{source}: expected a JSON object or a class name")
    else:
        raise ModelError(f"{path}: neither {INFO_FILE} nor {LEGACY_INFO_FILE} is present")

    try:
        thickness = settings.get("preferred_scribble_thickness", 2)
        thicknesses = thickness if isinstance(thickness, list) else [thickness] * 3
        if len(thicknesses) != 3:
            raise ValueError(f"preferred_scribble_thickness needs 3 values, not {thickness}")
        first, second, third = (_as_int(value, "preferred_scribble_thickness") for value in thicknesses)
        pad_mode = settings.get("pad_mode_image", "constant")
        if pad_mode != "constant":
            raise ValueError(f"pad_mode_image {pad_mode!r} is not supported (only 'constant')")
        supported = _supported_interactions(capability.get("supported_interactions", {}))
        count, prev_seg, mapping = _channel_mapping(capability)
        return InteractionConfig(
            channels=_channel_names(count, prev_seg, mapping),
            prev_seg_channel=prev_seg,
            point_channels=mapping["points"],
            box_channels=mapping["bbox2d"],
            box3d_channels=mapping["bbox3d"],
            lasso_channels=mapping["lasso"],
            scribble_channels=mapping["scribble"],
            point_radius=_as_int(settings.get("point_radius", 4), "point_radius"),
            interaction_decay=float(settings.get("interaction_decay", decay_default)),
            preferred_scribble_thickness=(first, second, third),
            pad_mode_image=pad_mode,
            supports_points=supported["points"],
            supports_2d_box=supported["bbox2d"],
            supports_3d_box=supported["bbox3d"],
            supports_scribble=supported["scribble"],
            supports_lasso=supported["lasso"],
            supports_initial_seg=bool(capability.get("supports_initial_label", True)),
            supports_zero_shot_refinement=bool(capability.get("supports_zero_shot_label_refinement", True)),
            cpu_refinement_patches=(
                None
                if capability.get("cpu_refinement_patches") is None
                else _as_int(capability["cpu_refinement_patches"], "cpu_refinement_patches")
            ),
        )
    except (TypeError, ValueError) as error:
        raise ModelError(f"{source}: {error}") from error
    except ModelError as error:
        raise ModelError(f"{source}: {error}") from error


def _check_session_class(info: dict[str, Any], path: Path) -> None:
    required = info.get("inference_class", REFERENCE_SESSION_CLASS)
    if required != REFERENCE_SESSION_CLASS:
        raise ModelError(
            f"{path}: the model needs inference class {required!r}, not {REFERENCE_SESSION_CLASS}"
        )
    minimum = info.get("inference_class_min_version")
    if minimum is not None and _version_tuple(str(minimum)) > REFERENCE_SESSION_VERSION:
        supported = ".".join(map(str, REFERENCE_SESSION_VERSION))
        raise ModelError(
            f"{path}: the model needs the encoding of nnInteractive >= {minimum}; "
            f"this engine implements {supported}"
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _supported_interactions(raw: Any) -> dict[str, bool]:
    if not isinstance(raw, dict):
        raise ValueError("supported_interactions must be an object")
    unknown = sorted(set(raw) - set(INTERACTION_KINDS))
    if unknown:
        raise ValueError(f"supported_interactions names unknown interactions {unknown}")
    return {**_DEFAULT_SUPPORTED, **{key: bool(value) for key, value in raw.items()}}


def _channel_mapping(capability: dict[str, Any]) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """Number of interaction channels (with prev_seg), prev_seg's index and each kind's pair, all >= 0."""
    raw = capability.get("channel_mapping", {})
    if not isinstance(raw, dict):
        raise ValueError("channel_mapping must be an object")
    unknown = sorted(set(raw) - {"prev_seg", *INTERACTION_KINDS})
    if unknown:
        raise ValueError(f"channel_mapping names unknown channels {unknown}")
    prev_seg = _as_int(raw.get("prev_seg", 0), "channel_mapping prev_seg")
    pairs = dict(_DEFAULT_MAPPING)
    for kind in INTERACTION_KINDS:
        if kind in raw:
            pair = raw[kind]
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError(f"channel_mapping {kind} must be a pair [positive, negative], not {pair}")
            pairs[kind] = (
                _as_int(pair[0], f"channel_mapping {kind}"),
                _as_int(pair[1], f"channel_mapping {kind}"),
            )
    if "interaction_channels" in capability:
        count = _as_int(capability["interaction_channels"], "interaction_channels") + 1
    elif raw:
        # Negative indices count from the end, so they need at least that many channels.
        indices = [prev_seg, *(index for pair in pairs.values() for index in pair)]
        count = max(max(i for i in indices if i >= 0) + 1, max((-i for i in indices if i < 0), default=0), 1)
    else:
        count = _DEFAULT_INTERACTION_CHANNELS + 1

    def absolute(index: int) -> int:
        return index if index >= 0 else count + index

    mapping = {kind: (absolute(pos), absolute(neg)) for kind, (pos, neg) in pairs.items()}
    return count, absolute(prev_seg), mapping


def _channel_names(count: int, prev_seg: int, mapping: dict[str, tuple[int, int]]) -> tuple[str, ...]:
    names = [f"unused{index}" for index in range(count)]
    for kind in reversed(INTERACTION_KINDS):  # the first kind in INTERACTION_KINDS order wins
        positive, negative = mapping[kind]
        for index, sign in ((positive, "+"), (negative, "-")):
            if 0 <= index < count:
                names[index] = _CHANNEL_LABELS[kind] + sign
    if 0 <= prev_seg < count:
        names[prev_seg] = "prev_seg"
    return tuple(names)


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"{what} must be a whole number, not {value!r}")
    return int(value)


def _resolve_configuration(plans: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    """The configuration with everything it inherits (``inherits_from``) filled in."""
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict):
        raise ModelError(f"{path}: no 'configurations'")
    chain: list[str] = []
    while True:
        if name in chain:
            raise ModelError(f"{path}: configurations inherit in a circle: {' -> '.join([*chain, name])}")
        if not isinstance(configurations.get(name), dict):
            raise ModelError(
                f"{path}: the checkpoint's configuration {name!r} is not among {sorted(configurations)}"
            )
        chain.append(name)
        parent = configurations[name].get("inherits_from")
        if parent is None:
            break
        name = parent
    resolved: dict[str, Any] = {}
    for link in reversed(chain):
        resolved.update(configurations[link])
    return resolved


def _patch_size(value: Any, path: Path) -> tuple[int, int, int]:
    if not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ModelError(f"{path}: patch_size must be three positive whole numbers (a 3D model), not {value}")
    return (value[0], value[1], value[2])


def _check_patch_fits_strides(patch_size: tuple[int, int, int], strides: Any, path: Path) -> None:
    if not isinstance(strides, list):
        raise ModelError(f"{path}: architecture strides must be a list, not {strides!r}")
    total = [1, 1, 1]
    for stride in strides:
        per_axis = stride if isinstance(stride, list) else [stride] * 3
        total = [t * int(s) for t, s in zip(total, per_axis, strict=False)]
    if any(size % t for size, t in zip(patch_size, total, strict=True)):
        raise ModelError(
            f"{path}: patch_size {list(patch_size)} is not divisible by the total stride {total}"
        )


def _locate(name: Any, path: Path) -> Any:
    if not isinstance(name, str) or not name.startswith(_IMPORTABLE_PREFIXES):
        raise ModelError(f"{path}: {name!r} is not a torch.nn or dynamic-network-architectures class")
    found = pydoc.locate(name)
    if not isinstance(found, type):
        raise ModelError(f"{path}: class {name} not found")
    return found


def _read_license(path: Path, dataset_name: str, configuration: str) -> str:
    license_file = path / LICENSE_FILE
    if license_file.is_file():
        for line in license_file.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                return line.strip()
    if dataset_name == _OFFICIAL_DATASET and configuration == _OFFICIAL_CONFIGURATION:
        return OFFICIAL_LICENSE
    return UNKNOWN_LICENSE


def _version(path: Path) -> str:
    match = re.search(r"_v(\d[\w.\-]*)$", path.name)
    if match:
        return match.group(1)
    try:
        provenance = json.loads((path / PROVENANCE_FILE).read_text())
        return f"{int(provenance['steps'])}-{provenance['commit']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"
