"""Launch a local Triton server (the `tritonserver` bundled in `nvidia-pytriton`)."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from serving.child_process import spawn, terminate
from serving.triton.repository import install_python_models, sync_outputs

SHM_GLOB = "/dev/shm/triton_python_backend_shm_region_*"


class TritonError(RuntimeError):
    """Triton could not be found or started."""


def pytriton_package() -> Path:
    """The installed nvidia-pytriton package directory, found without importing it.

    Importing `pytriton` pulls in its client and that client's dependencies (gevent...),
    which `make setup-triton` deliberately leaves out: only the server binary is used.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonError(
            "the local Triton server needs the 'nvidia-pytriton' wheel: "
            "`.venv/bin/pip install --no-deps nvidia-pytriton==0.7.0` (or `make setup-triton`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def pytriton_root() -> Path:
    """The `tritonserver` tree inside the installed nvidia-pytriton wheel."""
    return pytriton_package() / "tritonserver"


def backend_directory(target: Path) -> Path:
    """Assemble the python backend where tritonserver looks for it: B/python/{lib,utils,stub}."""
    root = pytriton_root()
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = [
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        root / "python_backend_stubs" / version / "triton_python_backend_stub",
    ]
    for src in sources:
        if not src.exists():
            raise TritonError(f"{src} missing from nvidia-pytriton (Python {version})")
        dst = python_dir / src.name
        if not dst.exists():
            shutil.copy2(src, dst)
    return target


def server_environment(python_env: Path) -> dict[str, str]:
    """Library and executable paths the server and its python stubs need.

    libpython of this interpreter first (a mismatched one breaks threading), then the
    wheel's bundled libraries (without them the stub cannot load and the server hangs);
    `python_env`'s bin first on PATH: the stub imports numpy and onnxruntime from there.
    That environment needs numpy < 2: the stub (built against numpy 1) reads numpy 2
    arrays as zero bytes and answers with empty outputs.
    """
    libs = pytriton_package().parent / "nvidia_pytriton.libs"
    env = dict(os.environ)
    lib_path = [str(sysconfig.get_config_var("LIBDIR")), str(libs)]
    if env.get("LD_LIBRARY_PATH"):
        lib_path.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(lib_path)
    env["PATH"] = f"{python_env / 'bin'}:{env.get('PATH', '')}"
    return env


def processes_using(directory: Path) -> list[int]:
    """Pids whose command line mentions `directory` (Linux /proc)."""
    marker = str(directory).encode()
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if marker in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
    return pids


class TritonServer:
    """A tritonserver process serving `repository`; a context manager.

    HTTP, gRPC and metrics bind to `host`: loopback unless a wider address is asked for.
    """

    def __init__(
        self,
        repository: Path,
        *,
        http_port: int,
        grpc_port: int,
        metrics_port: int,
        host: str = "127.0.0.1",
        python_env: Path,
        poll_seconds: int = 2,
        log_path: Path | None = None,
    ) -> None:
        self.python_env = python_env
        self.repository = repository.resolve()
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.poll_seconds = poll_seconds
        self.log_path = log_path
        self._workdir = Path(tempfile.mkdtemp(prefix="feedpulse-triton-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._shm_before: set[str] = set()

    @property
    def connect_host(self) -> str:
        """Where local clients reach the server: loopback when bound to every address."""
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
        return wildcard.get(self.host, self.host)

    @property
    def grpc_url(self) -> str:
        """Where gRPC clients connect."""
        host = self.connect_host
        return f"[{host}]:{self.grpc_port}" if ":" in host else f"{host}:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        """Process id of the server, if running."""
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        """The tritonserver command line."""
        return [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_directory(self._workdir / 'backends')}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--backend-config=python,shm-default-byte-size=4194304",
            # Poll the repository so a new model version is served without a restart.
            "--model-control-mode=poll",
            f"--repository-poll-secs={self.poll_seconds}",
            "--exit-timeout-secs=5",
        ]

    def start(self, timeout_s: float = 60) -> TritonServer:
        """Start the server and wait until it reports ready."""
        if not list(self.repository.glob("*/config.pbtxt")):
            raise TritonError(f"no */config.pbtxt under {self.repository}")
        if not (self.python_env / "bin" / "python").exists():
            raise TritonError(
                f"no Python environment for the python backend at {self.python_env}: "
                "run `make setup-triton`"
            )
        install_python_models(self.repository)
        sync_outputs(self.repository)
        self._shm_before = set(glob.glob(SHM_GLOB))
        self._proc = spawn(self.command(), self.log_path, server_environment(self.python_env))
        self.wait_ready(timeout_s)
        return self

    def alive(self) -> bool:
        """Whether the server process is running."""
        return self._proc is not None and self._proc.poll() is None

    def ready(self) -> bool:
        """True when the server's HTTP health endpoint says ready."""
        host = self.connect_host
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{self.http_port}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        """Block until ready, or fail with the server's exit code."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise TritonError(f"tritonserver exited with {self._proc.returncode}; see its log")
            if self.ready():
                return
            time.sleep(0.2)
        raise TritonError(f"tritonserver not ready after {timeout_s:.0f}s")

    def kill(self) -> None:
        """SIGKILL the server (fault injection); shared memory is cleaned by stop()."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self, timeout_s: float = 15) -> None:
        """Stop the server, then remove the shared-memory regions it left behind."""
        proc, self._proc = self._proc, None
        terminate(proc, timeout_s)
        # The python stubs of a SIGKILLed server can outlive it: they run from our backend
        # directory, so any process still running from there is one of them.
        for pid in processes_using(self._workdir):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        for path in set(glob.glob(SHM_GLOB)) - self._shm_before:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def close(self) -> None:
        """Stop and delete the working directory."""
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
