"""What every benchmark records about the machine it ran on, and how it writes results."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")  # what int8 and fp32 kernels use


def cpu_identity() -> dict[str, Any]:
    """The CPU as /proc/cpuinfo names it: ``model_name``, ``family``, ``model``, ``stepping`` and the
    :data:`ISA_FLAGS` it has. A cloud "AMD EPYC" may be one generation or another: ViT-B-32's int8
    image tower in benchmarks/ingest.py encoded 1.7x as many frames per second (torch fp32: 1.3x)
    on a family-26 EPYC with AVX-512 VNNI (2026-12-01) as in an earlier session on a machine also
    named only "AMD EPYC", so figures from different sessions compare only where these agree."""
    info: dict[str, Any] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip().lower(), value.strip()
                if not key and info:
                    break  # the first processor's block is enough
                if key == "model name":
                    info["model_name"] = value
                elif key in ("cpu family", "model", "stepping"):
                    info[key.replace("cpu ", "")] = int(value) if value.isdigit() else value
                elif key == "flags":
                    info["isa"] = [f for f in ISA_FLAGS if f in value.split()]
    except OSError:
        pass
    info.setdefault("model_name", platform.processor() or None)
    return info


def cpu_model() -> str | None:
    """The CPU's model name with its family and model numbers ("AMD EPYC (family 26, model 2)")."""
    cpu = cpu_identity()
    if "family" not in cpu:
        return cpu.get("model_name")
    return f"{cpu.get('model_name')} (family {cpu['family']}, model {cpu.get('model')})"


def machine_info() -> dict[str, Any]:
    """Platform, CPU model and count, memory, load, library versions and GPU (when there is one)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "processor": cpu_model(),
        "cpu": cpu_identity(),
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


# ingest settings measured side by side (issue #18): IngestConfig fields. decoder_threads 0 is
# FFmpeg's choice (cores + 1 threads in every decoder process, as before they were shared out),
# None today's default (the cores shared among the decoder processes, mmsearch.ingest.decoder_threads).
_BEFORE: dict[str, Any] = {"skip_similar": False, "skip_nonref": False, "skip_loop_filter": False, "image_runtime": "torch", "decoder_threads": 0}
_DEFAULT: dict[str, Any] = {**_BEFORE, "skip_similar": True, "skip_nonref": True, "decoder_threads": None}
SETTINGS: dict[str, dict[str, Any]] = {
    "before": _BEFORE,  # every sampled frame embedded, every frame decoded, torch fp32, FFmpeg's threads
    "skip-similar": {**_BEFORE, "skip_similar": True},
    "skip-nonref": {**_BEFORE, "skip_nonref": True},
    "skip-loop-filter": {**_BEFORE, "skip_loop_filter": True},
    "shared-threads": {**_BEFORE, "decoder_threads": None},
    "onnx-int8": {**_BEFORE, "image_runtime": "onnx-int8"},
    "default-ffmpeg-threads": {**_DEFAULT, "decoder_threads": 0},  # the default before decoder threads were shared out
    "default": _DEFAULT,  # mmsearch's defaults today
    "all-ffmpeg-threads": {**_DEFAULT, "image_runtime": "onnx-int8", "decoder_threads": 0},
    "all": {**_DEFAULT, "image_runtime": "onnx-int8"},  # the defaults and the int8 tower
    "fastest": {**_DEFAULT, "image_runtime": "onnx-int8", "skip_loop_filter": True},  # every option
}
DECODER_FIELDS = ("skip_similar", "skip_nonref", "skip_loop_filter", "decoder_threads")  # what decode-only depends on


def setting_options(setting: str) -> dict[str, Any]:
    """The IngestConfig fields of a named setting (:data:`SETTINGS`)."""
    return dict(SETTINGS[setting])


def decoder_settings(setting: str) -> tuple[Any, ...]:
    """The values of :data:`DECODER_FIELDS` in a named setting: what its decoded frames depend on."""
    return tuple(SETTINGS[setting][name] for name in DECODER_FIELDS)
