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

A library is code that runs inside the process, so it is loaded only from a place no one else can write:
the cache folder is created ``0700``; a folder or library that another user owns, or that the group or
others may write, is refused; and the SHA-256 of each library is recorded next to it when it is built
(``<name>.so.sha256``) and checked, on the very file descriptor that is then loaded, before ``dlopen``.
A library whose hash does not match (or that has none) is rebuilt once.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import stat
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


class UnsafeLibraryError(RuntimeError):
    """A kernel library or its folder that others could have written: it is not loaded."""


def secure_folder(folder: Path) -> Path:
    """``folder``, created ``0700`` when missing; an existing one must be this user's and not writable by the
    group or others (else `UnsafeLibraryError`)."""
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # another process made it just now: checked below like any existing one
            pass
    st = folder.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeLibraryError(f"kernel cache {folder} is not a folder")
    _check_owner(folder, st)
    return folder


def _check_owner(path: Path, st: os.stat_result) -> None:
    uid = os.getuid()
    if st.st_uid != uid:
        raise UnsafeLibraryError(f"{path} belongs to user {st.st_uid}, not to this user ({uid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeLibraryError(
            f"{path} is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} (mode {stat.S_IMODE(st.st_mode):o})"
        )


def hash_path(library: Path) -> Path:
    """Where the library's SHA-256, recorded when it was built, is kept."""
    return library.with_name(library.name + ".sha256")


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, 1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def record_hash(library: Path) -> str:
    """Write ``library``'s SHA-256 next to it (atomically); return it."""
    fd = os.open(library, os.O_RDONLY)
    try:
        value = _sha256_fd(fd)
    finally:
        os.close(fd)
    target = hash_path(library)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(value + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, target)
    return value


def open_verified(library: Path) -> int:
    """A read-only descriptor of ``library`` once it is known to be this user's regular file, not writable by
    others, with the SHA-256 recorded at build time (`UnsafeLibraryError` otherwise). Loading through this
    descriptor loads exactly the bytes that were checked."""
    recorded = hash_path(library)
    if not recorded.is_file():
        raise UnsafeLibraryError(f"{library} has no recorded hash ({recorded.name})")
    _check_owner(recorded, recorded.stat())
    fd = os.open(library, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeLibraryError(f"{library} is not a regular file")
        _check_owner(library, st)
        actual = _sha256_fd(fd)
        expected = recorded.read_text().strip()
        if actual != expected:
            raise UnsafeLibraryError(f"{library} does not match the hash recorded when it was built")
    except BaseException:
        os.close(fd)
        raise
    return fd


def load_verified(library: Path) -> ctypes.CDLL:
    """`open_verified`, then ``dlopen`` of that very descriptor (``/proc/self/fd``) where the platform has it."""
    fd = open_verified(library)
    try:
        through = Path(f"/proc/self/fd/{fd}")
        return ctypes.CDLL(str(through) if through.exists() else str(library))
    finally:
        os.close(fd)


def build(compiler: str, target: Path, source: Path = SOURCE) -> None:
    """Compile ``source`` (by default the package's) into ``target`` (written to a temporary name, its hash
    recorded, then renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *FLAGS, "-o", tmp, str(source), "-lm"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr.strip()}")
        os.chmod(tmp, 0o700)
        value = record_hash(Path(tmp))
        hash_path(Path(tmp)).replace(hash_path(target))
        os.replace(tmp, target)
        logger.debug("built %s (sha256 %s)", target, value)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        hash_path(Path(tmp)).unlink(missing_ok=True)


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
        return _bind(load_from(cache_dir(), compiler))
    except UnsafeLibraryError as err:
        logger.warning(
            "fused CPU kernels refused: %s. Using the PyTorch path; point %s at a folder of your own (mode 0700).", err, ENV_CACHE
        )
        return None
    except Exception as err:  # a failed build or load must never stop training: fall back
        logger.warning("fused CPU kernels unavailable (%s); using the PyTorch path. Set %s=0 to skip the attempt.", err, ENV_SWITCH)
        return None


def load_from(folder: Path, compiler: str) -> ctypes.CDLL:
    """The library in ``folder`` (checked, see the module), built there when missing; a library that fails
    the hash check is rebuilt once. Raises `UnsafeLibraryError` for a folder others could write."""
    secure_folder(folder)
    path = folder / library_path(compiler).name
    if not path.exists():
        logger.info("building fused CPU kernels into %s", path)
        build(compiler, path)
    try:
        return load_verified(path)
    except UnsafeLibraryError as err:
        if path.is_symlink() or not path.is_file() or "hash" not in str(err):
            raise
        logger.warning("%s; rebuilding it", err)
        build(compiler, path)
        return load_verified(path)


def load_other(source: Path, folder: Path) -> ctypes.CDLL:
    """Another version of the kernel source (e.g. an earlier commit's), built with the same compiler and flags
    into ``folder`` and loaded, for benchmarks that compare versions. Raises when it cannot be built or
    its ABI differs."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (cc, gcc, clang or $CC)")
    target = secure_folder(Path(folder)) / f"t2v_cpu_kernels-{hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]}.so"
    build(compiler, target, Path(source))
    return _bind(load_verified(target))


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
