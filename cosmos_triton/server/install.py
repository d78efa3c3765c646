"""Where tritonserver is and what its Python stub needs around it.

Two installations are supported:
- an image whose `tritonserver` is on PATH with its own backends (NGC `nvcr.io/nvidia/tritonserver:24.10-py3`,
  backends at /opt/tritonserver/backends): used as is;
- the nvidia-pytriton wheel (`<site>/pytriton/tritonserver/bin/tritonserver`): its Python backend has no stub in
  `backends/python/`, so a per-launch backend folder is built with a symlink to the stub for the running Python
  (a symlink keeps the stub's relative RPATH to `nvidia_pytriton.libs/`).
In both cases the Python stub builds its `sys.path` from the first `python3` on PATH (PYTHONPATH is ignored), so
the running interpreter's bin directory goes first on PATH, and the server runs in the directory that holds the
`cosmos_triton` package. When the stub would embed another libpython than the running interpreter's (pyenv
Python, Debian libpython3.11), the interpreter's LIBDIR goes first on LD_LIBRARY_PATH (see match_stub_libpython).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

TRITONSERVER_ENV = "COSMOS_TRITONSERVER"  # explicit path of the tritonserver binary, overrides the search


class ServerError(RuntimeError):
    """The server could not be started, died, or did not become ready; the message ends with its log tail."""


@dataclass(frozen=True)
class TritonInstall:
    """Where the tritonserver binary is and what it needs around it."""

    binary: Path
    backends: Path | None  # the server's own backend folder (image layout); None for the wheel layout
    stubs: Path | None  # wheel: python_backend_stubs/ (one stub per Python major.minor)
    libs: Path | None  # wheel: nvidia_pytriton.libs/, needed on LD_LIBRARY_PATH by a stub that is not a symlink

    @property
    def is_wheel(self) -> bool:
        return self.stubs is not None


def _install_from_binary(binary: Path) -> TritonInstall:
    root = binary.resolve().parent.parent  # .../tritonserver (wheel) or /opt/tritonserver (image)
    stubs = root / "python_backend_stubs"
    if stubs.is_dir():
        return TritonInstall(binary, None, stubs, root.parent.parent / "nvidia_pytriton.libs")
    backends = root / "backends"
    return TritonInstall(binary, backends if backends.is_dir() else None, None, None)


def find_tritonserver(explicit: str | Path | None = None) -> TritonInstall:
    """`explicit` or $COSMOS_TRITONSERVER, else `tritonserver` on PATH, else the nvidia-pytriton wheel's binary."""
    candidates: list[Path] = []
    chosen = explicit or os.environ.get(TRITONSERVER_ENV)
    if chosen:
        candidates.append(Path(chosen).expanduser())
    elif on_path := shutil.which("tritonserver"):
        candidates.append(Path(on_path))
    else:
        # find_spec locates the wheel without importing pytriton (whose import is slow and pulls in its client)
        spec = importlib.util.find_spec("pytriton")
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                candidates.append(Path(location) / "tritonserver" / "bin" / "tritonserver")
    for binary in candidates:
        if binary.is_file() and os.access(binary, os.X_OK):
            return _install_from_binary(binary)
    tried = ", ".join(map(str, candidates)) or "nothing (no tritonserver on PATH, nvidia-pytriton not installed)"
    raise ServerError(
        f"tritonserver not found; tried {tried}. Install nvidia-pytriton, put tritonserver on PATH, "
        f"or set {TRITONSERVER_ENV}."
    )


def prepare_backend_dir(install: TritonInstall, workdir: Path) -> Path | None:
    """Backend folder to pass as --backend-directory (None: the server's default).

    Wheel layout: `<workdir>/backends/python/` with symlinks to the wheel's Python backend files plus
    `triton_python_backend_stub` -> the stub built for the running Python's major.minor.
    """
    if not install.is_wheel:
        return install.backends
    assert install.stubs is not None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        have = sorted(p.name for p in install.stubs.iterdir() if p.is_dir())
        raise ServerError(f"no Python-backend stub for Python {version} in {install.stubs} (has {have})")
    source = install.binary.resolve().parent.parent / "backends" / "python"
    target = workdir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name not in ("__pycache__", "triton_python_backend_stub"):
            (target / entry.name).symlink_to(entry)
    (target / "triton_python_backend_stub").symlink_to(stub)
    return target.parent


def _linked_libpython(stub: Path, env: dict[str, str]) -> tuple[str, Path | None] | None:
    """(soname, resolved path or None when not found) of the libpython the stub links, per ldd."""
    try:
        result = subprocess.run(["ldd", str(stub)], env=env, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in result.stdout.splitlines():
        match = re.match(r"\s*(libpython3\.\d+\.so[.\d]*)\s+=>\s+(\S+)", line)
        if match:
            found = match.group(2)
            return match.group(1), None if found == "not" else Path(found).resolve()
    return None


def _own_libpython() -> Path | None:
    """The shared libpython of the running interpreter, if it was built with one."""
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not (sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname):
        return None
    path = Path(libdir) / soname
    return path.resolve() if path.is_file() else None


def match_stub_libpython(stub: Path, env: dict[str, str], log: TextIO | None = None) -> None:
    """Make the stub load the same libpython as the running interpreter (edits env["LD_LIBRARY_PATH"]).

    The stub embeds whatever libpython3.X the loader finds (the system's), but takes its stdlib from the
    `python3` on PATH. When those are different builds (a pyenv/conda Python next to Debian's libpython3.11),
    stdlib C modules fail inside the stub, e.g. `_ssl`: "undefined symbol: _PyModule_Add" (3.11.7 stdlib on
    a 3.11.2 libpython), which breaks `import diffusers`. The stub's RPATH lacks libpython, so putting the
    running interpreter's LIBDIR first on LD_LIBRARY_PATH selects the matching library.
    """
    linked = _linked_libpython(stub, env)
    own = _own_libpython()
    if linked is None or (own is not None and linked[1] == own):
        return
    if own is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(own.parent), env.get("LD_LIBRARY_PATH")]))
        return
    if linked[1] is None:
        raise ServerError(
            f"the Python-backend stub {stub} needs {linked[0]}, which is not installed, and this Python "
            f"({sys.executable}) has no shared libpython; install {linked[0]} (Debian: libpython3.X)"
        )
    if log is not None:
        print(f"[cosmos-triton] warning: the stub embeds {linked[1]}, which may not match the stdlib of "
              f"{sys.executable}", file=log)


def environment_warnings() -> list[str]:
    """Problems of this Python environment that only show once a request reaches a Python model."""
    warnings = []
    if not (Path(sys.executable).parent / "python3").exists():
        warnings.append(f"no python3 next to {sys.executable}: the Python stub will import another "
                        "environment's packages")
    try:
        numpy_version = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        numpy_version = "0"
    # Seen with the 2.51 stub and numpy 2.5.2 (GPU image): a BYTES input kills the stub in
    # deserialize_bytes_tensor ("unpack_from requires a buffer of at least 185273103 bytes") and BYTES
    # outputs arrive empty; with numpy 1.26.4 the same models work.
    if int(numpy_version.split(".")[0]) >= 2:
        warnings.append(f"numpy {numpy_version}: the Triton 2.51 Python stub corrupts BYTES tensors with "
                        "numpy 2; install numpy<2 (the project pins 1.26.4)")
    return warnings


def visible_gpu_count() -> int:
    """Number of GPUs the server will see, without initialising CUDA in this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return 0
    count = 0
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
            if result.returncode == 0:
                count = sum(line.startswith("GPU ") for line in result.stdout.splitlines())
    if count == 0:
        gpus = Path("/proc/driver/nvidia/gpus")
        count = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    if count and visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip()]))
    return count


