"""What every benchmark records about the machine it ran on, and how it writes results."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    """Platform, CPU model and count, memory, load, library versions and GPU (when there is one)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    try:
        info["memory_gb"] = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import faiss

        info["faiss"] = faiss.__version__
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def describe(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['cuda']}" if info.get("cuda") else ""
    return (f"{info['platform']}, {info.get('processor')}, {info['cpu_count']} CPUs, "
            f"{info.get('memory_gb')} GB, load {info.get('load_average')}{gpu}")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON via a temporary file and a rename (no half-written results)."""
    from mmsearch.fileio import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"), fsync=False)


def random_clip_checkpoint(model: str, directory: Path) -> Path:
    """open_clip ``model`` with random weights saved as a local checkpoint (they cost what real ones do).

    No model host is reachable from the benchmark machines; real weights would change the
    vectors, not the arithmetic timed here.
    """
    import open_clip
    import torch

    from mmsearch.encoders.clip import register_packaged_configs

    register_packaged_configs()
    path = Path(directory) / f"{model}-random.pt"
    if not path.exists():
        torch.manual_seed(0)
        net = open_clip.create_model(model)
        torch.save({"state_dict": net.state_dict()}, path)
    return path


def cli_command(*args: str) -> list[str]:
    """The ``mmsearch`` command line with ``args``, run by this Python (its entry point, as a user runs it)."""
    import sys

    return [sys.executable, "-c", "from mmsearch.cli import main; main()", *args]


def free_port() -> int:
    """A TCP port on loopback nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ingest settings measured side by side (issue #18): (skip_similar, skip_nonref, image_runtime)
SETTINGS: dict[str, tuple[bool, bool, str]] = {
    "before": (False, False, "torch"),  # every sampled frame embedded, every frame decoded, torch fp32
    "skip-similar": (True, False, "torch"),
    "skip-nonref": (False, True, "torch"),
    "onnx-int8": (False, False, "onnx-int8"),
    "default": (True, True, "torch"),  # mmsearch's defaults today
    "all": (True, True, "onnx-int8"),
}


def setting_options(setting: str) -> dict[str, Any]:
    """The IngestConfig fields of a named setting (:data:`SETTINGS`)."""
    similar, nonref, runtime = SETTINGS[setting]
    return {"skip_similar": similar, "skip_nonref": nonref, "image_runtime": runtime}
