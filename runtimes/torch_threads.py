"""PyTorch's process-wide thread pools, shared by every torch model loaded in the process.

``torch.set_num_threads`` (intra-op) and ``torch.set_num_interop_threads`` (inter-op) act on the whole process,
not on one model, so the models' ``intra_op_threads`` / ``inter_op_threads`` options are combined:

- intra-op: the largest value any loaded model asked for (it only ever grows, so loading a model never starves
  one already serving);
- inter-op: the first value asked for (torch refuses to change it once inter-op work has started);

and a warning is logged whenever a model asks for a value other than the one in force.

OpenMP keeps its team size per OS thread: eager ATen ops adopt torch's count in each new thread by themselves,
but AOTInductor's compiled loops do not, so the AOTI runtime calls ``adopt_in_this_thread`` before running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import torch

from runtimes.base import RuntimeLoadError

log = logging.getLogger(__name__)
_lock = threading.Lock()
_adopted = threading.local()
_intra: int | None = None
_inter: int | None = None


def _count(options: Mapping[str, Any], key: str) -> int | None:
    value = options.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RuntimeLoadError(f"option {key} must be a positive integer, got {value!r}")
    return value


def apply_thread_options(options: Mapping[str, Any], model: str) -> None:
    """Apply ``intra_op_threads`` / ``inter_op_threads`` from ``options`` under the process-wide policy above."""
    global _intra, _inter
    intra = _count(options, "intra_op_threads")
    inter = _count(options, "inter_op_threads")
    with _lock:
        if intra is not None:
            if _intra is not None and intra != _intra:
                log.warning(
                    "%s asks for intra_op_threads=%d but torch models in this process share one pool; using %d",
                    model,
                    intra,
                    max(intra, _intra),
                )
            if _intra is None or intra > _intra:
                torch.set_num_threads(intra)
                _intra = intra
        if inter is not None:
            if _inter is None:
                try:
                    torch.set_num_interop_threads(inter)
                    _inter = inter
                except RuntimeError:
                    _inter = torch.get_num_interop_threads()
                    log.warning(
                        "%s asks for inter_op_threads=%d but torch already started its inter-op pool with %d",
                        model,
                        inter,
                        _inter,
                    )
            elif inter != _inter:
                log.warning(
                    "%s asks for inter_op_threads=%d but torch models in this process share one pool of %d",
                    model,
                    inter,
                    _inter,
                )


def adopt_in_this_thread() -> None:
    """Give the calling thread's OpenMP team torch's process-wide thread count (once per thread; cheap after)."""
    count = torch.get_num_threads()
    if getattr(_adopted, "count", None) != count:
        torch.set_num_threads(count)
        _adopted.count = count
