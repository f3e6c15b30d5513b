#!/usr/bin/env python
"""What decoding without the in-loop deblocking filter changes: pictures and embeddings, side by side.

    python benchmarks/decode_fidelity.py --media-dir /tmp/ingest-media --models vit-b-32,synth-clip \
        --json benchmarks/results/decode-fidelity.json

``--skip-loop-filter`` (FFmpeg's ``skip_loop_filter=all``, :class:`mmsearch.media.PyAVBackend`)
makes decoding cheaper (README, "Faster indexing on a CPU") and the pictures slightly blockier;
the difference carries through predicted frames up to the next keyframe. For every file, every
frame sampled at ``--fps`` is decoded twice by PyAV with mmsearch's defaults (non-reference
frames undecoded), with and without the filter, at each model's input size, and this reports:

* PSNR of the undeblocked pictures against the deblocked ones (the same sampled frames: their
  seconds must agree, else the script stops);
* cosine of each picture's embedding with its deblocked twin's (the image tower each model runs);
* top-1 agreement (:func:`mmsearch.encoders.image_tower.agreement`, the int8 tower's check): the
  share of pictures, among all files', whose nearest other picture is the same with and without
  the filter, or (``tie``, :data:`TIE`) one within 0.001 cosine of it by the deblocked vectors: the
  frames of a tripod shot or a slide are near-identical, and which of them is nearest is a coin
  toss (the strict share is reported too).

The bars are those issue #18 sets for the int8 image tower: cosine >= 0.99 and top-1 agreement
>= 0.99. Files: the ingest benchmark's (``benchmarks/ingest.py``: busy, static, talking-head and
slide footage, 1280x720 H.264, generated into ``--media-dir`` when missing) and the real clips of
``/work/shared/media/decord`` when present. ``vit-b-32`` has random weights (its pictures cost and
vary as a trained tower's do); ``synth-clip`` is the packaged synthetic model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import describe, machine_info, write_json  # noqa: E402  (benchmarks/ on sys.path as the script's folder)

REAL = Path("/work/shared/media/decord")
BARS = {"cosine_min": 0.99, "top1_agreement": 0.99}
TIE = 1e-3  # cosine within which two nearest pictures count as the same answer (a still shot's frames)


def decode(path: Path, fps: float, short_side: int, skip_loop_filter: bool) -> tuple[list[float], Any]:
    import numpy as np

    from mmsearch.media import get_backend

    backend = get_backend("pyav", skip_nonref=True, skip_loop_filter=skip_loop_filter)
    batches = list(backend.iter_frames(str(path), fps=fps, short_side=short_side))
    return [float(t) for b in batches for t in b.timestamps], np.concatenate([b.frames for b in batches])


def psnr(a: Any, b: Any) -> Any:
    """Per picture, dB (``inf`` where identical)."""
    import numpy as np

    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(255.0**2 / mse)


def measure(files: list[Path], encoders: dict[str, Any], fps: float) -> dict[str, Any]:
    import numpy as np

    from mmsearch.encoders.image_tower import agreement

    per_model: dict[str, Any] = {}
    for key, enc in encoders.items():
        rows, deblocked, undeblocked = [], [], []
        for path in files:
            t_ref, ref = decode(path, fps, enc.input_size, False)
            t_fast, fast = decode(path, fps, enc.input_size, True)
            if t_ref != t_fast:
                raise SystemExit(f"{path}: the frames sampled differ with the loop filter skipped ({t_ref} vs {t_fast})")
            e_ref, e_fast = enc.encode_images(ref), enc.encode_images(fast)
            cos = np.sum(e_ref * e_fast, axis=1)
            p = psnr(fast, ref)
            rows.append({"file": path.name, "frames": len(ref), "psnr_min": float(p.min()), "psnr_median": float(np.median(p)),
                         "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())})
            deblocked.append(e_ref)
            undeblocked.append(e_fast)
        ref_all, fast_all = np.concatenate(deblocked), np.concatenate(undeblocked)
        figures = agreement(ref_all, fast_all, tie=TIE)
        per_model[key] = {
            "files": rows, "frames": sum(r["frames"] for r in rows), "cosine_min": figures["min_cosine"], "cosine_mean": figures["mean_cosine"],
            "top1_agreement": figures["top1"], "top1_agreement_strict": agreement(ref_all, fast_all)["top1"],
            "passes": bool(figures["min_cosine"] >= BARS["cosine_min"] and figures["top1"] >= BARS["top1_agreement"]),
        }
    return per_model


def print_table(result: dict[str, Any]) -> None:
    print(f"decode fidelity without the loop filter ({describe(result['machine'])}); bars: cosine >= {BARS['cosine_min']}, "
          f"top-1 agreement >= {BARS['top1_agreement']}")
    print(f"{'model':<11} {'file':<26} {'frames':>6} {'PSNR min dB':>11} {'PSNR median':>11} {'cosine min':>10} {'cosine mean':>11}")
    for key, m in result["models"].items():
        for r in m["files"]:
            print(f"{key:<11} {r['file']:<26} {r['frames']:>6} {r['psnr_min']:>11.1f} {r['psnr_median']:>11.1f} "
                  f"{r['cosine_min']:>10.4f} {r['cosine_mean']:>11.4f}")
        print(f"{key:<11} {'all files':<26} {m['frames']:>6} {'':>11} {'':>11} {m['cosine_min']:>10.4f} {m['cosine_mean']:>11.4f}"
              f"  top-1 agreement {m['top1_agreement']:.3f} (strict {m['top1_agreement_strict']:.3f})"
              f"  {'meets the bars' if m['passes'] else 'BELOW THE BARS'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vit-b-32,synth-clip", help="comma-separated, of benchmarks/ingest.py's MODELS")
    p.add_argument("--media-dir", default=None, help="the ingest benchmark's media cache (generated there when missing)")
    p.add_argument("--videos", type=int, default=2, help="files of each kind of footage")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--footage", default="busy,static,talking,slides")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--no-real", action="store_true", help="leave out the real clips of /work/shared/media/decord")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import torch

    import ingest as ingest_bench  # benchmarks/ingest.py: its media and model loading

    torch.set_num_threads(1)
    media_args = argparse.Namespace(seconds=args.seconds, seed=0, media_dir=args.media_dir, regenerate=False,
                                    footage=[x for x in args.footage.split(",") if x], videos=args.videos, real_clip=False)
    files, _ = ingest_bench.prepare_media(media_args) if media_args.footage and args.videos else ([], None)
    if not args.no_real and REAL.is_dir():
        files += [f for f in sorted(REAL.iterdir()) if f.suffix in (".mkv", ".mov", ".mp4") and f.name != "corrupted.mp4"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        encoders = {key: ingest_bench.load_encoder(key, Path(work))[0] for key in args.models.split(",") if key}
        models = measure(files, encoders, args.fps)
    result = {"benchmark": "decode_fidelity", "machine": machine_info(), "fps": args.fps, "bars": BARS,
              "files": [str(f) for f in files], "models": models, "wall_seconds": time.perf_counter() - started}
    print_table(result)
    if args.json:
        write_json(Path(args.json), result)
    return 0 if all(m["passes"] for m in models.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
