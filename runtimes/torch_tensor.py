"""Tensors between numpy and PyTorch: the V2 datatype <-> torch dtype table and zero-copy conversions (BF16 too)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from runtimes.datatype import BF16

__all__ = ["to_numpy", "to_torch", "torch_dtype", "v2_datatype"]

# V2 datatype name -> torch dtype. BYTES has no torch counterpart.
_TORCH: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "UINT16": torch.uint16,
    "UINT32": torch.uint32,
    "UINT64": torch.uint64,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "FP16": torch.float16,
    "FP32": torch.float32,
    "FP64": torch.float64,
    "BF16": torch.bfloat16,
}
_V2_BY_TORCH: dict[torch.dtype, str] = {dtype: name for name, dtype in _TORCH.items()}


def v2_datatype(dtype: torch.dtype) -> str:
    """The V2 datatype name of a torch dtype; ValueError for dtypes the protocol cannot carry."""
    try:
        return _V2_BY_TORCH[dtype]
    except KeyError:
        raise ValueError(f"torch dtype {dtype} has no V2 datatype") from None


def torch_dtype(datatype: str) -> torch.dtype:
    """The torch dtype of V2 ``datatype``; ValueError for BYTES and unknown names."""
    try:
        return _TORCH[datatype]
    except KeyError:
        raise ValueError(f"V2 datatype {datatype!r} cannot be fed to a PyTorch model") from None


def quiet_readonly_warning() -> None:
    """Silence torch's one-time "array is not writable" warning, process-wide.

    Read-only arrays (``np.frombuffer`` over a request body) are shared with torch without a copy; the runtimes
    never write into their inputs, so the warning would only alarm whoever reads the server log.
    """
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)


def to_torch(array: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """Share ``array``'s memory with a torch tensor (copied only when strided or moved to another device)."""
    array = np.ascontiguousarray(array)
    if array.dtype == BF16:
        tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(array)
    if device != "cpu":
        tensor = tensor.to(device)
    return tensor


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of ``tensor`` (moved to the CPU first when it lives elsewhere)."""
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.contiguous().view(torch.int16).numpy().view(BF16)
    return tensor.numpy()
