"""A loaded model: the network of a model folder on one device, shared by every session of the process."""

import os
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from inference.errors import ModelError
from inference.model_folder import InteractionConfig, ModelInfo, build_network, open_model_folder
from inference.registry import configured_model, resolve

__all__ = ["InteractionConfig", "Model", "ModelInfo", "load_model"]


class Model:
    """The network of one model folder on one device, with what the folder says about prompts.

    One Model serves many sessions: ``predict_logits`` runs one forward pass at a time.
    """

    def __init__(self, info: ModelInfo, network: nn.Module, device: torch.device, *, compile: bool = False):
        self.info = info
        self.name: str = info.name
        self.version: str = info.version
        self.license: str = info.license
        self.path: Path = info.path
        self.patch_size: tuple[int, int, int] = info.patch_size
        self.num_image_channels: int = info.num_image_channels
        self.num_input_channels: int = info.num_input_channels
        self.interaction: InteractionConfig = info.interaction
        self.network = network
        self.device = device
        self._forward = torch.compile(network) if compile else network
        self._lock = threading.Lock()
        # CUDA only: a pinned host buffer the batch is staged in, and the event that says its copy is done.
        self._staging: torch.Tensor | None = None
        self._staged: torch.cuda.Event | None = None

    def __repr__(self) -> str:
        return f"<Model {self.name} ({self.license}) on {self.device}>"

    def predict_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (N, 2, *patch_size), float32 on ``self.device``, of a batch (N, C, *patch_size).

        C is num_input_channels; any float dtype and device. CUDA runs under fp16 autocast (as the reference
        does); the batch travels to the GPU as fp16, the precision autocast gives it before the first
        convolution anyway. CPU results are deterministic for a given thread count. The result is an
        inference-mode tensor: read it, do not modify it in place outside ``torch.inference_mode()``.
        """
        expected = (self.num_input_channels, *self.patch_size)
        if batch.ndim != 5 or tuple(batch.shape[1:]) != expected:
            raise ValueError(
                f"batch must have shape (N, {', '.join(map(str, expected))}), not {tuple(batch.shape)}"
            )
        if not batch.is_floating_point():
            raise ValueError(f"batch must be a float tensor, not {batch.dtype}")
        with self._lock, torch.inference_mode():
            if self.device.type != "cuda":
                return self._forward(batch.to(self.device, torch.float32)).float()
            with torch.autocast("cuda", dtype=torch.float16):
                return self._forward(self._to_gpu(batch)).float()

    def _to_gpu(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.device.type == "cuda":
            return batch.to(self.device, torch.float16)
        # Pinned memory lets the copy run asynchronously at full bus speed; the buffer is reused, so wait
        # until the previous copy out of it has finished before overwriting it.
        if self._staging is None or self._staging.shape != batch.shape:
            self._staging = torch.empty(batch.shape, dtype=torch.float16, pin_memory=True)
            self._staged = torch.cuda.Event()
        else:
            assert self._staged is not None
            self._staged.synchronize()
        self._staging.copy_(batch)
        on_device = self._staging.to(self.device, non_blocking=True)
        assert self._staged is not None
        self._staged.record()
        return on_device

    def warmup(self) -> None:
        """One forward pass, so that the first prompt does not pay cuDNN's algorithm search or compilation.

        On CPU (never compiled, see load_model) there is nothing to warm up and this does nothing: one pass of
        the v1.0 network takes minutes on a few cores.
        """
        if self.device.type != "cuda":
            return
        self.predict_logits(torch.zeros((1, self.num_input_channels, *self.patch_size)))
        torch.cuda.synchronize(self.device)

    def memory_bytes(self) -> int:
        """Bytes held by the network's parameters and buffers."""
        tensors = (*self.network.parameters(), *self.network.buffers())
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def load_model(
    source: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    *,
    threads: int | None = None,
    compile: bool = False,
    warmup: bool = True,
) -> Model:
    """Load a model folder (a path, or a name in the model registry) onto ``device``; without ``source``,
    the configured model (``$ANNOVOX_MODEL``, else the shipped default).

    ``device``: "cpu", "cuda" or "cuda:N". ``threads``: torch's CPU thread count (a process-wide setting).
    ``compile``: torch.compile the network (CUDA only; ignored with a warning on CPU, where the network spends
    its time in convolutions that compiling does not speed up). ``warmup``: run one forward pass now (CUDA or
    compiled only, see Model.warmup). Raises ModelError for a missing or broken folder or an unusable device.
    """
    target = _device(device)
    if threads is not None:
        if threads < 1:
            raise ModelError(f"threads must be at least 1, not {threads}")
        torch.set_num_threads(threads)
    if compile and target.type != "cuda":
        warnings.warn("torch.compile is only used on CUDA; loading the model uncompiled", stacklevel=2)
        compile = False
    if target.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every pass has the same input shape: tune the algorithms once
    folder, checkpoint = open_model_folder(resolve(configured_model() if source is None else source))
    network = build_network(folder, checkpoint, target)
    del checkpoint
    model = Model(folder.info, network, target, compile=compile)
    if warmup:
        model.warmup()
    return model


def _device(device: str | torch.device) -> torch.device:
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ModelError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from error
    if target.type == "cpu":
        return torch.device("cpu")
    if target.type != "cuda":
        raise ModelError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ModelError(
            f"device {device!r} requested but CUDA is not available (torch {torch.__version__}, {build}); "
            "install the CUDA build of torch for your driver (see README) or use device 'cpu'"
        )
    index = torch.cuda.current_device() if target.index is None else target.index
    if index >= torch.cuda.device_count():
        raise ModelError(
            f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return torch.device("cuda", index)
