"""Random-weight model folders in the format of the official nnInteractive weights, for the engine's tests.

Both the engine's load_model and the reference package (nninteractive) load them. The network is the class
of the v1.0 weights (nnU-Net's ResidualEncoderUNet), small enough for CPU tests unless the official shape is
asked for.
"""

import json
from pathlib import Path
from typing import Any

import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

OFFICIAL_DATASET = "Dataset225_nnInteractiveV2"
OFFICIAL_CONFIGURATION = "3d_fullres_ps192_bs24"
INTERACTION_CHANNELS = (
    7  # prev_seg, then a positive and a negative channel for boxes/lassos, points, scribbles
)
# What the reference's loader reads; "interaction_decay" left out is 0.98 for the object form.
SESSION_SETTINGS = {
    "inference_class": "nnInteractiveInferenceSession",
    "point_radius": 4,
    "preferred_scribble_thickness": [2, 2, 2],
    "interaction_decay": 0.98,
    "pad_mode_image": "constant",
}


def architecture(features: tuple[int, ...], blocks: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The plans' "architecture" entry of a ResidualEncoderUNet with one stage per entry of ``features``."""
    stages = len(features)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
        "arch_kwargs": {
            "n_stages": stages,
            "features_per_stage": list(features),
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * stages,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1),
            "n_blocks_per_stage": list(blocks or [1] * stages),
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


def make_checkpoint_folder(
    root: Path,
    *,
    patch_size: tuple[int, int, int] = (32, 32, 32),
    features: tuple[int, ...] = (8, 16, 32),
    seed: int = 0,
    info_file: str = "inference_session_class.json",
    license: str | None = None,
    name: str = "test_model_v0.1",
    dataset_name: str = "Dataset999_AnnovoxTest",
    configuration: str = "3d_fullres",
    blocks: tuple[int, ...] | None = None,
    info: Any = None,
) -> Path:
    """Write ``root/name`` as a model folder with random weights (deterministic given ``seed``) and return it.

    ``info_file``: "inference_session_class.json" (older folders) or "inference_info.json" (newer), holding
    ``info`` (by default SESSION_SETTINGS). ``license``: the LICENSE file's text, or None for no file.
    """
    folder = root / name
    (folder / "fold_0").mkdir(parents=True)
    arch = architecture(features, blocks)
    plans: dict[str, Any] = {
        "dataset_name": dataset_name,
        "plans_name": "nnUNetResEncUNetLPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": [128, 128, 128],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(patch_size),
                "median_image_size_in_voxels": [128, 128, 128],
                "spacing": [1.0, 1.0, 1.0],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {
                    "is_seg": False,
                    "order": 3,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_seg_kwargs": {
                    "is_seg": True,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "architecture": arch,
                "batch_dice": False,
            },
        },
        "experiment_planner_used": "nnUNetPlannerResEncL",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0, "std": 1.0},
        },
    }
    if configuration != "3d_fullres":  # the official plans name a configuration that inherits from 3d_fullres
        plans["configurations"][configuration] = {"inherits_from": "3d_fullres", "batch_size": 24}
    dataset = {
        "channel_names": {"0": "image"},
        "labels": {"background": 0, "object": 1},
        "numTraining": 0,
        "file_ending": ".nii.gz",
    }
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    (folder / info_file).write_text(json.dumps(SESSION_SETTINGS if info is None else info, indent=2))
    if license is not None:
        (folder / "LICENSE").write_text(license)

    kwargs = dict(arch["arch_kwargs"])
    kwargs.update(
        conv_op=torch.nn.Conv3d, norm_op=torch.nn.InstanceNorm3d, dropout_op=None, nonlin=torch.nn.LeakyReLU
    )
    with torch.random.fork_rng(devices=[]):  # deterministic without disturbing the caller's random state
        torch.manual_seed(seed)
        network = ResidualEncoderUNet(input_channels=1 + INTERACTION_CHANNELS, num_classes=2, **kwargs)
        network.apply(network.initialize)
        with torch.no_grad():
            for parameter in network.parameters():
                if parameter.ndim == 1:  # norm gains and biases: away from 1 and 0, so that they matter
                    parameter.add_(torch.randn_like(parameter) * 0.2)
    weights = network.state_dict()
    checkpoint = {
        "network_weights": weights,
        "trainer_name": "nnInteractiveTrainer_stub",
        "init_args": {
            "plans": plans,
            "configuration": configuration,
            "fold": 0,
            "device": torch.device("cpu"),
        },
        "current_epoch": 1,
        "_best_ema": None,
        "grad_scaler_state": None,
        "logging": {},
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def official_architecture_folder(root: Path, patch_size: tuple[int, int, int] = (192, 192, 192)) -> Path:
    """The v1.0 folder's shape with random weights: ResEnc-L, 6 stages up to 320 features, ~102 M parameters.

    Named and configured like the official folder (so the reference reports CC BY-NC-SA 4.0 for it too).
    Writes a 410 MB checkpoint.
    """
    return make_checkpoint_folder(
        root,
        patch_size=patch_size,
        features=(32, 64, 128, 256, 320, 320),
        blocks=(1, 3, 4, 6, 6, 6),
        name="nnInteractive_v1.0",
        dataset_name=OFFICIAL_DATASET,
        configuration=OFFICIAL_CONFIGURATION,
    )
