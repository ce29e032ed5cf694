"""The backbone's compute dtype: float32, bfloat16, or bfloat16 only where the hardware has it (``auto``).

Almost all of a run's time is the frozen backbone's forward pass. On hardware with native bfloat16
(CPUs with AVX512_BF16 or AMX, NVIDIA GPUs from compute capability 8.0, TPUs) Keras'
``mixed_bfloat16`` policy runs it about 1.3x (EfficientNet-B7) to 2x (VGG19) faster on these 2-core
machines; elsewhere bfloat16 is emulated and slower than float32, so ``auto`` picks it only where it is
native, and logs what it found. Variables stay float32 under the policy (the weights, their
fingerprint and the heads do not change); the backbone's output is cast back to float32.

Two settings use this: ``training.compute_dtype`` (the features the heads are trained on) and
``serving.compute_dtype`` (the backbone inside the exported model: what the gate evaluates, the
infra validator loads, SHAP explains and TF Serving runs).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator, Optional, Set, Tuple

logger = logging.getLogger(__name__)

FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
AUTO = "auto"
CHOICES = (FLOAT32, BFLOAT16, AUTO)
CPU_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = "/proc/cpuinfo"


def cpu_flags(path: str = CPUINFO) -> Set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where that file is absent."""
    if not os.path.exists(path):
        return set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def native_bfloat16() -> Tuple[bool, str]:
    """Whether this machine runs bfloat16 natively, and what was found (for the log and the metadata)."""
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return True, "a TPU"
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability") or (0, 0)
        if tuple(capability) >= (8, 0):
            return True, f"GPU {details.get('device_name', gpu.name)} (compute capability {capability[0]}.{capability[1]})"
    flags = cpu_flags()
    found = [f for f in CPU_FLAGS if f in flags]
    if found:
        return True, f"the CPU has {' and '.join(found)}"
    return False, ("no TPU, no GPU of compute capability 8.0 or more, and the CPU lacks "
                   f"{' / '.join(CPU_FLAGS)}: bfloat16 would be emulated")


def resolve(setting: str, what: str) -> Tuple[str, str]:
    """The dtype ``setting`` means on this machine, and why (also logged).

    Args:
      setting: ``float32``, ``bfloat16`` or ``auto``.
      what: whose setting it is, for the log (``training.compute_dtype``, ``serving.compute_dtype``).

    Raises:
      ValueError: an unknown setting.
    """
    if setting not in CHOICES:
        raise ValueError(f"{what} '{setting}' is not one of {', '.join(CHOICES)}")
    if setting == FLOAT32:
        return FLOAT32, "float32 as configured"
    native, found = native_bfloat16()
    if setting == BFLOAT16:
        if not native:
            logger.warning("%s = bfloat16 on a machine without native bfloat16 (%s): expect it to be slower "
                           "than float32", what, found)
        return BFLOAT16, f"bfloat16 as configured ({found})"
    dtype = BFLOAT16 if native else FLOAT32
    why = f"auto: {found}, so {dtype}"
    logger.info("%s %s", what, why)
    return dtype, why


@contextlib.contextmanager
def policy(dtype: Optional[str]) -> Iterator[None]:
    """Keras layers built inside compute in ``dtype`` (``mixed_bfloat16`` for bfloat16); the global
    policy is restored on exit."""
    import keras

    if dtype in (None, FLOAT32):
        yield
        return
    if dtype != BFLOAT16:
        raise ValueError(f"compute dtype '{dtype}' is not one of {FLOAT32}, {BFLOAT16}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
