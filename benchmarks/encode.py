#!/usr/bin/env python
"""Image-encoder throughput by device and batch size, side by side in one run.

    python benchmarks/encode.py --model ViT-B-32 --devices cpu,cuda --batches 32,64,128,256,512 \
        --json benchmarks/results/encode.json

For each device and batch size it times ``ClipEncoder.encode_images`` (what ingestion calls)
on ``--frames`` uint8 frames shaped as the decoder delivers them (short side = the model's input
size, 16:9), so preprocessing (crop and normalise, on the encoder's device) and the copy back are
counted; frames per second, best of ``--repeats``. On CUDA the model runs in fp16. Weights are
random (no model host is reachable here), which costs the same arithmetic as real ones.
The CPU rows use at most ``--cpu-frames`` frames: 16 CPU cores were ~200x slower than an H100.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import describe, machine_info, random_clip_checkpoint, write_json  # noqa: E402


def frames_per_second(enc, frames, repeats: int) -> float:  # noqa: ANN001
    enc.encode_images(frames[: enc.batch_size])  # warm-up: kernels, cuDNN/oneDNN plans
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        enc.encode_images(frames)  # returns numpy: the GPU work is finished when it returns
        best = min(best, time.perf_counter() - t0)
    return len(frames) / best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random weights)")
    p.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is left out where there is none")
    p.add_argument("--batches", default="32,64,128,256,512", help="comma-separated batch sizes")
    p.add_argument("--frames", type=int, default=2048, help="frames per timed pass")
    p.add_argument("--cpu-frames", type=int, default=128, help="frames per timed pass on the CPU")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from mmsearch.encoders import EncoderSpec
    from mmsearch.encoders.clip import ClipEncoder

    devices = [d for d in args.devices.split(",") if d and (d != "cuda" or torch.cuda.is_available())]
    batches = [int(b) for b in args.batches.split(",") if b]
    ckpt = random_clip_checkpoint(args.model, Path(tempfile.mkdtemp(prefix="mmsearch-bench-encode-")))
    spec = EncoderSpec("clip", args.model, str(ckpt))
    info = machine_info()
    rows = []
    for device in devices:
        for batch in batches if device != "cpu" else batches[:1]:
            enc = ClipEncoder(spec, device=device, batch_size=batch)
            side = enc.input_size
            n = args.frames if device != "cpu" else min(args.frames, args.cpu_frames)
            rng = np.random.default_rng(0)
            frames = rng.integers(0, 256, size=(n, side, side * 16 // 9, 3), dtype=np.uint8)
            fps = frames_per_second(enc, frames, args.repeats)
            rows.append({"model": args.model, "device": device, "precision": "fp16" if device.startswith("cuda") else "fp32",
                         "batch": batch, "frames": n, "frame_shape": list(frames.shape[1:]), "frames_per_s": round(fps, 1)})
            print(f"{args.model:10s} {device:5s} {rows[-1]['precision']} batch {batch:4d}: {fps:9.1f} frames/s", flush=True)
            del enc
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    print(f"machine: {describe(info)}")
    if args.json:
        write_json(Path(args.json), {"machine": info, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
