"""Model folders written by training, in the format of the official weights, so the engine loads them alike.

A trained model is a folder with ``plans.json`` (one configuration: the patch size and the architecture),
``dataset.json`` (one image channel), ``inference_info.json`` (the prompt encoding the network was trained
with), ``fold_0/checkpoint_final.pth`` (``network_weights``, ``trainer_name``, ``init_args``), ``LICENSE``
and ``provenance.json`` (what it was trained on, how long, from which seed and commit).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from inference.model_folder import (
    CHECKPOINT_FILE,
    DATASET_FILE,
    INFO_FILE,
    LICENSE_FILE,
    PLANS_FILE,
    PROVENANCE_FILE,
    REFERENCE_SESSION_CLASS,
    InteractionConfig,
)

TRAINER_NAME = "AnnovoxInteractiveTrainer"
CONFIGURATION = "3d_fullres"
# The licence of models we train: the project's own. provenance.json lists the data and their licences.
OUR_LICENSE = "Apache-2.0"

# The compact default network: nnU-Net's plain U-Net, five stages of 8..128 features on a 64³ patch, one
# convolution per stage at full resolution (where most of the CPU time goes) and two below. About 1 M
# parameters and 0.1 s per forward pass on two CPU cores.
COMPACT_FEATURES = (8, 16, 32, 64, 128)
COMPACT_CONVS = (1, 2, 2, 2, 2)
COMPACT_PATCH = (64, 64, 64)
# AutoZoom's full-resolution refinement on CPU: at most this many extra passes after the zoomed-out ones,
# so that a prompt on a large object stays interactive on two cores (docs/benchmarks.md).
COMPACT_CPU_REFINEMENT_PATCHES = 2


def plain_unet_architecture(
    features: Sequence[int] = COMPACT_FEATURES, convs: Sequence[int] = COMPACT_CONVS
) -> dict[str, Any]:
    """The plans' "architecture" entry of a PlainConvUNet with one stage per entry of ``features``."""
    stages = len(features)
    if len(convs) != stages:
        raise ValueError(f"{stages} stages need {stages} convolution counts, got {len(convs)}")
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": stages,
            "features_per_stage": list(features),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * stages,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1),
            "n_conv_per_stage": list(convs),
            "n_conv_per_stage_decoder": [1] * (stages - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def interaction_info(config: InteractionConfig) -> dict[str, Any]:
    """inference_info.json for a network trained with the prompt encoding ``config``."""
    prev = config.prev_seg_channel
    return {
        "inference_class": REFERENCE_SESSION_CLASS,
        "point_radius": config.point_radius,
        "preferred_scribble_thickness": list(config.preferred_scribble_thickness),
        "interaction_decay": config.interaction_decay,
        "pad_mode_image": config.pad_mode_image,
        "interaction_channels": config.num_channels - 1,
        "channel_mapping": {
            "prev_seg": prev,
            "points": list(config.point_channels),
            "bbox2d": list(config.box_channels),
            "bbox3d": list(config.box3d_channels),
            "scribble": list(config.scribble_channels),
            "lasso": list(config.lasso_channels),
        },
        "supported_interactions": {
            "points": config.supports_points,
            "bbox2d": config.supports_2d_box,
            "bbox3d": config.supports_3d_box,
            "scribble": config.supports_scribble,
            "lasso": config.supports_lasso,
        },
        "supports_initial_label": config.supports_initial_seg,
        "supports_zero_shot_label_refinement": config.supports_zero_shot_refinement,
        **(
            {}
            if config.cpu_refinement_patches is None
            else {"cpu_refinement_patches": config.cpu_refinement_patches}
        ),
    }


def write_model_folder(
    destination: Path,
    *,
    architecture: Mapping[str, Any],
    patch_size: Sequence[int],
    interaction: InteractionConfig,
    weights: Mapping[str, torch.Tensor],
    provenance: Mapping[str, Any],
    license: str = OUR_LICENSE,
    dataset_name: str = "Dataset900_AnnovoxInteractive",
) -> Path:
    """Write a model folder at ``destination`` (replacing one that is there) and return it.

    The folder is assembled under a temporary name beside ``destination`` and renamed into place, so a
    reader never sees half a model.
    """
    plans = {
        "dataset_name": dataset_name,
        "plans_name": "AnnovoxPlans",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            CONFIGURATION: {
                "patch_size": [int(p) for p in patch_size],
                "spacing": None,  # native grid: nothing is resampled (DESIGN.md)
                "normalization_schemes": ["ZScoreNormalization"],
                "architecture": dict(architecture),
            }
        },
    }
    dataset = {"channel_names": {"0": "image"}, "labels": {"background": 0, "object": 1}}
    checkpoint = {
        "network_weights": {
            name: tensor.detach().cpu().float().contiguous() for name, tensor in weights.items()
        },
        "trainer_name": TRAINER_NAME,
        "init_args": {"configuration": CONFIGURATION, "fold": 0},
    }
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a model folder is read by the server's user too
    try:
        (staging / "fold_0").mkdir()
        _write_json(staging / PLANS_FILE, plans)
        _write_json(staging / DATASET_FILE, dataset)
        _write_json(staging / INFO_FILE, interaction_info(interaction))
        _write_json(staging / PROVENANCE_FILE, {"license": license, **provenance})
        (staging / LICENSE_FILE).write_text(
            f"{license}\n\nSee {PROVENANCE_FILE} for the training data and their licences.\n"
        )
        torch.save(checkpoint, staging / "fold_0" / CHECKPOINT_FILE)
        if destination.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{destination.name}-old-", dir=destination.parent))
            os.replace(destination, old / destination.name)
            shutil.rmtree(old)
        os.replace(staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
