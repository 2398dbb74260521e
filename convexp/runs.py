"""The run folder: where every experiment writes, atomically, what it did.

runs/<YYYYmmdd-HHMMSS>-<command>[-<name>]/ holds config.yaml, summary.json (with status
running | completed | failed | interrupted), metrics, plots and model. Every file is written to
a temporary name and renamed, so a kill never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from convexp.errors import ConvexpError


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.plots = self.path / "plots"

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def create(cls, out: str | Path, command: str, name: str | None = None) -> RunFolder:
        check_name(name)
        out = Path(out)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{command}" + (f"-{name}" if name else "")
        make_folder(out, "run folders")
        try:
            for attempt in range(1, 1000):  # two runs in the same second get -2, -3, ...
                path = out / (base if attempt == 1 else f"{base}-{attempt}")
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    continue
            else:
                raise ConvexpError(f"{out} already holds 999 runs named {base}: pass another --out or --name")
        except OSError as exc:
            raise ConvexpError(f"cannot write run folders under {out} ({exc.strerror}): pass a writable --out") from None
        return cls(path)

    def child(self, name: str) -> RunFolder:
        """A sub-run (one sweep point); opened as is when it exists, so resume can reuse it."""
        child = RunFolder(self.path / name)
        child.path.mkdir(exist_ok=True)
        return child

    def child_status(self, name: str) -> str | None:
        """A sub-run's status without creating its folder: a study of 10,000 points creates each
        point's folder only when that point starts (the executor's task does)."""
        return RunFolder(self.path / name).status

    # -- atomic writes ----------------------------------------------------------------------

    def write_bytes(self, relative: str, data: bytes) -> Path:
        return write_atomic(self.path / relative, data)

    def write_text(self, relative: str, text: str) -> Path:
        return self.write_bytes(relative, text.encode())

    def write_json(self, relative: str, data: Any) -> Path:
        return self.write_text(relative, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def write_csv(self, relative: str, rows: list[dict[str, Any]]) -> Path:
        buffer = io.StringIO()
        if rows:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return self.write_text(relative, buffer.getvalue())

    def save_torch(self, relative: str, obj: Any) -> Path:
        import torch  # here: what only reads run folders (convexp runs, report) never imports torch

        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return self.write_bytes(relative, buffer.getvalue())

    def log(self, line: str) -> None:
        """Append one line to log.txt (appends are whole lines; no rename needed)."""
        with (self.path / "log.txt").open("a") as f:
            f.write(line.rstrip("\n") + "\n")

    # -- reading ----------------------------------------------------------------------------

    def read_json(self, relative: str) -> Any:
        return json.loads((self.path / relative).read_text())

    def read_summary(self) -> dict[str, Any]:
        return read_summary(self.path)

    def update_summary(self, **fields: Any) -> dict[str, Any]:
        summary = self.read_summary()
        summary.update(fields)
        self.write_json("summary.json", summary)
        return summary

    @property
    def status(self) -> str | None:
        return self.read_summary().get("status")

    def resume_folder(self) -> Path:
        """What `convexp resume` takes to go on with this run: its study's folder, for a study's child."""
        return self.path.parent if self.read_summary().get("child_of") else self.path


def make_folder(path: Path, what: str) -> None:
    """`path` made (parents too) and checked writable, before any work: an --out under a regular
    file or in a folder this user cannot write is one line, not a traceback after the work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        existing = next(p for p in (path, *path.parents) if p.exists())  # `/` exists: one always does
        why = f"{existing} is a file" if not existing.is_dir() else exc.strerror
        raise ConvexpError(f"cannot write {what} under {path} ({why}): pass a writable --out") from None


def require_writable_file(path: Path, example: str) -> None:
    """An --out that names a file: not a folder, and in a folder this user can write (made if
    missing), checked before any work; `example`: a file name to suggest inside a folder."""
    if path.is_dir():
        raise ConvexpError(f"--out {path} is a folder: pass a file path, e.g. --out {path / example}")
    make_folder(path.parent, path.name)


@contextlib.contextmanager
def run_lock(run: RunFolder) -> Iterator[None]:
    """One process per run folder: the lock is the kernel's, so a killed owner never leaves it held."""
    with (run.path / ".lock").open("a") as lock:
        for _ in range(20):  # `convexp runs` probes the lock for an instant: wait that out
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
        else:
            owner = run.read_summary().get("owner", {})
            raise ConvexpError(f"{run.path} is being run now by another convexp (pid {owner.get('pid', '?')} on "
                               f"{owner.get('host', '?')}): wait for it to end, or stop it first") from None
        yield


def is_alive(run_path: Path) -> bool:
    """Whether some process holds the run folder's lock: a `running` run that nobody holds was killed."""
    lock_file = run_path / ".lock"
    if not lock_file.is_file():
        return False
    with lock_file.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


MAX_NAME = 100


def check_name(name: str | None) -> None:
    """--name becomes part of a folder name: one path component, of a length file systems take."""
    if name is None:
        return
    if not name or "/" in name or "\0" in name or name in (".", "..") or len(name) > MAX_NAME:
        raise ConvexpError(f"--name {name[:40]!r}{'...' if len(name) > 40 else ''} cannot be part of a folder name: use "
                           f"1 to {MAX_NAME} characters without '/'")


def read_summary(folder: Path) -> dict[str, Any]:
    """A run folder's summary.json ({} when there is none); the one reader of it."""
    path = Path(folder) / "summary.json"
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConvexpError(f"{path} cannot be read ({type(exc).__name__}): the run folder is damaged; "
                           "restore the file or delete the folder") from None
    if not isinstance(summary, dict):
        raise ConvexpError(f"{path} is not a JSON object: the run folder is damaged; restore the file or delete the folder")
    return summary


UMASK = os.umask(0o022)
os.umask(UMASK)  # read once: os.umask can only be read by setting it


def write_atomic(target: Path, data: bytes) -> Path:
    """Write to a temporary name beside `target`, fsync, rename: never half a file under the real name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~UMASK)  # readable like any file the user writes, not mkstemp's 0600
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def environment() -> dict[str, Any]:
    """What a reader needs to repeat a run: versions, machine, source commit."""
    import torch

    from convexp.precision import denormal_arithmetic

    return {
        "torch_version": torch.__version__,
        "torchvision_version": installed_version("torchvision"),
        "python_version": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_denormals": denormal_arithmetic(),
        "git_commit": git_commit(),
    }


def installed_version(package: str) -> str | None:
    """The package's version from its metadata: importing torchvision to ask would cost 2 s."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def now() -> str:
    return datetime.now().isoformat(timespec="seconds")
