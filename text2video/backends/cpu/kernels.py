"""Fused float32 CPU kernels (``csrc/cpu_kernels.c``), built with the system C compiler on first use.

Parts of the pixel-space U-Net's training step are dominated on CPU by many small operations, not by
arithmetic: attention over the few frames at every pixel (``T x T`` problems by the ten thousand), RMS
norm + scale-shift + SiLU, the patch copies of 3x3 convolutions on tiny maps, and the tile and weight
transforms of Winograd convolutions (:mod:`text2video.backends.cpu.winograd_conv`). Each is one pass over memory
in C. The library is compiled once per source version and machine into a cache folder
(``$TEXT2VIDEO_KERNEL_CACHE``, else ``~/.cache/text2video/kernels``) with ``cc`` and :data:`FLAGS`
(``-O3 -march=native -ffast-math -fopenmp``; ``$CC`` picks another compiler) and loaded with
:mod:`ctypes`; its OpenMP loops run in torch's own OpenMP runtime.

Nothing depends on it: :func:`load` returns None when there is no compiler, the build fails, or
``TEXT2VIDEO_CPU_KERNELS=0`` is set, and callers then use their PyTorch path (the reason is logged
once).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.c"
FLAGS = ("-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-shared")
ABI_VERSION = 3
ENV_SWITCH = "TEXT2VIDEO_CPU_KERNELS"
ENV_CACHE = "TEXT2VIDEO_KERNEL_CACHE"

_i64, _f32, _int, _ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_int, ctypes.c_void_p
_SIGNATURES = {
    "t2v_abi_version": ((), _int),
    "t2v_max_frames": ((), _int),
    "t2v_short_attention_forward": ((_ptr, _ptr, _ptr, _i64, _ptr, _ptr, _i64, _i64, _i64, _i64, _f32, _int), None),
    "t2v_short_attention_backward": ((_ptr, _ptr, _ptr, _i64, _ptr, _ptr, _ptr, _i64, _i64, _i64, _i64, _f32, _int), _int),
    "t2v_rms_silu_forward": ((_ptr, _ptr, _i64, _ptr, _i64, _ptr, _ptr, _i64, _i64, _i64, _f32, _int), None),
    "t2v_rms_silu_backward": ((_ptr, _ptr, _ptr, _i64, _ptr, _i64, _ptr, _ptr, _ptr, _ptr, _i64, _i64, _i64, _int), _int),
    "t2v_im2col3x3": ((_ptr, _ptr, _i64, _i64, _i64, _i64, _int), None),
    "t2v_col2im3x3": ((_ptr, _ptr, _i64, _i64, _i64, _i64, _int), None),
    "t2v_winograd_input": ((_ptr, _ptr, _i64, _i64, _i64, _i64, _int, _int), None),
    "t2v_winograd_output": ((_ptr, _ptr, _ptr, _i64, _i64, _i64, _i64, _int, _int), None),
    "t2v_winograd_output_adjoint": ((_ptr, _ptr, _i64, _i64, _i64, _i64, _int, _int), None),
    "t2v_winograd_input_adjoint": ((_ptr, _ptr, _i64, _i64, _i64, _i64, _int, _int), None),
    "t2v_winograd_weight": ((_ptr, _ptr, _i64, _int, _int), None),
    "t2v_winograd_weight_adjoint": ((_ptr, _ptr, _i64, _int, _int), None),
}


def cache_dir() -> Path:
    """Where built libraries are kept."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "text2video" / "kernels"


def _cpu_signature() -> str:
    """The CPU model and feature flags (``-march=native`` code only runs where these match)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = [line for line in lines if line.startswith(("model name", "flags"))]
    return "\n".join(dict.fromkeys(keep))


def _compiler() -> Optional[str]:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def library_path(compiler: str) -> Path:
    """The cached library's path for this source, compiler, flags and CPU."""
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), compiler.encode(), " ".join(FLAGS).encode(), _cpu_signature().encode(), platform.machine().encode()):
        digest.update(part)
        digest.update(b"\0")
    return cache_dir() / f"t2v_cpu_kernels-{digest.hexdigest()[:16]}.so"


def build(compiler: str, target: Path, source: Path = SOURCE) -> None:
    """Compile ``source`` (by default the package's) into ``target`` (written to a temporary name, then
    renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *FLAGS, "-o", tmp, str(source), "-lm"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name, (args, res) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = list(args), res
    if lib.t2v_abi_version() != ABI_VERSION:
        raise RuntimeError(f"kernel library reports ABI {lib.t2v_abi_version()}, expected {ABI_VERSION}")
    return lib


@functools.cache
def load() -> Optional[ctypes.CDLL]:
    """The kernel library, built if needed; None when disabled or unavailable (the reason is logged)."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        logger.info("fused CPU kernels disabled by %s", ENV_SWITCH)
        return None
    compiler = _compiler()
    if compiler is None:
        logger.warning("no C compiler found (cc, gcc, clang or $CC): using the PyTorch path for fused CPU kernels")
        return None
    try:
        path = library_path(compiler)
        if not path.exists():
            logger.info("building fused CPU kernels into %s", path)
            build(compiler, path)
        return _bind(ctypes.CDLL(str(path)))
    except Exception as err:  # a failed build or load must never stop training: fall back
        logger.warning("fused CPU kernels unavailable (%s); using the PyTorch path. Set %s=0 to skip the attempt.", err, ENV_SWITCH)
        return None


def load_other(source: Path, folder: Path) -> ctypes.CDLL:
    """Another version of the kernel source (e.g. an earlier commit's), built with the same compiler and flags
    into ``folder`` and loaded, for benchmarks that compare versions. Raises when it cannot be built or
    its ABI differs."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (cc, gcc, clang or $CC)")
    target = Path(folder) / f"t2v_cpu_kernels-{hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]}.so"
    build(compiler, target, Path(source))
    return _bind(ctypes.CDLL(str(target)))


def usable(*tensors: Optional[torch.Tensor]) -> Optional[ctypes.CDLL]:
    """The library, if every given tensor is a float32 CPU tensor and the library loads; else None."""
    for t in tensors:
        if t is not None and (t.device.type != "cpu" or t.dtype != torch.float32):
            return None
    return load()


def ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    """The data pointer of a contiguous tensor (None stays None)."""
    if t is None:
        return None
    if not t.is_contiguous():
        raise ValueError("fused CPU kernels take contiguous tensors")
    return t.data_ptr()


def threads() -> int:
    return max(1, torch.get_num_threads())
