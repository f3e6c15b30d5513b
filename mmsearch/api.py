"""The Python API: one facade over ingest, store and retrieval.

>>> import mmsearch
>>> mmsearch.index_paths(["./videos"], "./my-index", model="synth-clip")   # doctest: +SKIP
>>> idx = mmsearch.open_index("./my-index")                                # doctest: +SKIP
>>> for hit in idx.search(text="a red circle", k=5):                       # doctest: +SKIP
...     print(hit.path, hit.start, hit.end, hit.score)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .encoders import EncoderSpec, create_encoder, resolve_spec
from .errors import EncoderMismatchError, UsageError
from .ingest import VISUAL, IngestConfig, IngestReport, describe_mismatch
from .ingest import index_paths as _ingest
from .media import load_image
from .retrieval import LocalizeConfig, search_space
from .store import Snapshot, open_snapshot

Modality = Literal["video", "image", "audio"]


def default_index_dir() -> Path:
    """``$MMSEARCH_INDEX``, else ``$XDG_DATA_HOME/mmsearch/index`` (``~/.local/share/mmsearch/index``)."""
    env = os.environ.get("MMSEARCH_INDEX")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "mmsearch" / "index"


@dataclass(frozen=True)
class SearchResult:
    """One moment: a file and the seconds [start, end) in it."""

    path: str
    start: float
    end: float
    score: float
    video_score: float | None
    modality: Modality

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def index_paths(
    paths: list[str | os.PathLike] | str | os.PathLike,
    index: str | os.PathLike | None = None,
    *,
    model: str | None = None,
    pretrained: str | None = None,
    device: str = "auto",
    config: IngestConfig | None = None,
    progress: Any = None,
) -> IngestReport:
    """Index (or bring up to date) the media under ``paths``; see :func:`mmsearch.ingest.index_paths`.

    Without ``model``, an existing index keeps the encoder it was built with;
    a new index gets ``ViT-B-32`` / ``laion2b_s34b_b79k``.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    root = Path(index) if index is not None else default_index_dir()
    stored = _stored_spec(root, VISUAL)
    if model is None and pretrained is None and stored is not None:
        spec = stored
    else:
        spec = resolve_spec(model, pretrained, family="clip")
    if config is None:
        config = _stored_config(root) or IngestConfig()
    return _ingest(
        paths,
        root,
        encoder_factory=lambda: create_encoder(spec, device=device),
        config=config,
        progress=progress,
        verify_encoder=model is not None or pretrained is not None,
    )


def remove_paths(paths: list[str | os.PathLike], index: str | os.PathLike | None = None) -> list[str]:
    """Drop files (or everything under folders) from the index; returns the paths removed."""
    from .moments import MomentConfig
    from .store import IndexWriter, read_manifest

    root = Path(index) if index is not None else default_index_dir()
    read_manifest(root)  # a clear error when there is no index
    removed: list[str] = []
    with IndexWriter(root) as writer:
        targets = [os.path.abspath(os.fspath(p)) for p in paths]
        for path in list(writer.paths):
            if any(path == t or path.startswith(t.rstrip(os.sep) + os.sep) for t in targets):
                writer.remove_path(path)
                removed.append(path)
        if removed:
            cfg = writer.config
            writer.commit(moment_config=MomentConfig(float(cfg.get("window", 4.0)), float(cfg.get("stride", 2.0))))
    return removed


class Index:
    """A read-only view of one generation of an index directory."""

    def __init__(self, snapshot: Snapshot, *, device: str = "auto", spec_override: EncoderSpec | None = None) -> None:
        self.snapshot = snapshot
        self.root = snapshot.root
        self.device = device
        self._encoders: dict[str, Any] = {}
        self._spec_override = spec_override
        self._rows = snapshot.media_rows()
        self._durations = {m: float(r["duration"] or 0.0) for m, r in self._rows.items()}

    @property
    def manifest(self) -> dict[str, Any]:
        return self.snapshot.manifest

    def info(self) -> dict[str, Any]:
        m = self.manifest
        kinds: dict[str, int] = {}
        for row in self._rows.values():
            kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        return {
            "index": str(self.root),
            "generation": m["generation"],
            "format_version": m["format_version"],
            "media": kinds,
            "paths": len(self.snapshot.media),
            "failures": len(self.snapshot.failures),
            "config": m.get("config", {}),
            "spaces": {
                name: {
                    "encoder": entry["encoder"]["identity"],
                    "frames": entry.get("derived", {}).get("n_frames", 0),
                    "moments": entry.get("derived", {}).get("n_moments", 0),
                    "index": entry.get("recipe", {}),
                }
                for name, entry in m.get("spaces", {}).items()
            },
            "library_versions": m.get("library_versions", {}),
        }

    def encoder(self, space: str = VISUAL) -> Any:
        """The encoder that built ``space`` (built once, on first use)."""
        if space not in self._encoders:
            entry = self.manifest["spaces"].get(space)
            if entry is None:
                raise UsageError(f"the index at {self.root} has no {space} space; index some media first")
            spec = self._spec_override or EncoderSpec(**entry["encoder"]["spec"])
            encoder = create_encoder(spec, device=self.device)
            if encoder.identity() != entry["encoder"]["identity"]:
                raise EncoderMismatchError(describe_mismatch(self.root, entry["encoder"], encoder.identity()))
            self._encoders[space] = encoder
        return self._encoders[space]

    def embed_queries(self, *, text: list[str] | None = None, images: list[str | os.PathLike] | None = None) -> np.ndarray:
        encoder = self.encoder(VISUAL)
        if text is not None:
            cleaned = [t.strip() for t in text]
            if any(not t for t in cleaned):
                raise UsageError("empty query text: say what to look for, e.g. mmsearch query \"a dog on a beach\"")
            return encoder.encode_text(cleaned)
        if images is not None:
            return encoder.encode_images([load_image(p, short_side=encoder.input_size) for p in images])
        raise UsageError("give a text or an image to search for")

    def search(
        self,
        text: str | None = None,
        *,
        image: str | os.PathLike | None = None,
        k: int = 10,
        videos: int = 20,
        exhaustive: bool = False,
        localize: LocalizeConfig = LocalizeConfig(),
    ) -> list[SearchResult]:
        """The best ``k`` moments for a text or an example image, best first."""
        if (text is None) == (image is None):
            raise UsageError("give exactly one of a text query or --image FILE")
        if text is not None:
            queries = self.embed_queries(text=[text])
        else:
            queries = self.embed_queries(images=[image])  # type: ignore[list-item]
        return self.search_vectors(queries, k=k, videos=videos, exhaustive=exhaustive, localize=localize)[0]

    def search_vectors(
        self,
        queries: np.ndarray,
        *,
        k: int = 10,
        videos: int = 20,
        exhaustive: bool = False,
        localize: LocalizeConfig = LocalizeConfig(),
    ) -> list[list[SearchResult]]:
        if k < 1 or videos < 1:
            raise UsageError(f"-k and --videos must be at least 1, got {k} and {videos}")
        space = self.snapshot.spaces.get(VISUAL)
        if space is None:
            return [[] for _ in range(len(np.atleast_2d(queries)))]
        hits = search_space(
            space, queries, k=k, videos=videos, exhaustive=exhaustive, durations=self._durations, config=localize
        )
        return [[self._result(h) for h in row] for row in hits]

    def _result(self, hit: Any) -> SearchResult:
        row = self._rows[hit.media_id]
        modality: Modality = "image" if row["kind"] == "image" else "video"
        return SearchResult(
            path=row["path"],
            start=round(hit.start, 3),
            end=round(hit.end, 3),
            score=float(hit.score),
            video_score=None if hit.media_score is None else float(hit.media_score),
            modality=modality,
        )


def open_index(
    root: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    model: str | None = None,
    pretrained: str | None = None,
) -> Index:
    """Open the current generation of an index (``root`` defaults to :func:`default_index_dir`).

    ``model``/``pretrained`` name the query encoder explicitly; it must be the
    one the index was built with (or the same weights from another file).
    """
    snapshot = open_snapshot(Path(root) if root is not None else default_index_dir())
    override = resolve_spec(model, pretrained, family="clip") if (model or pretrained) else None
    return Index(snapshot, device=device, spec_override=override)


def _stored_spec(root: Path, space: str) -> EncoderSpec | None:
    from .store import MANIFEST, read_manifest

    if not (root / MANIFEST).exists():
        return None
    entry = read_manifest(root).get("spaces", {}).get(space)
    return EncoderSpec(**entry["encoder"]["spec"]) if entry else None


def _stored_config(root: Path) -> IngestConfig | None:
    from .store import MANIFEST, read_manifest

    if not (root / MANIFEST).exists():
        return None
    cfg = read_manifest(root).get("config", {})
    known = {k: cfg[k] for k in ("fps", "backend", "window", "stride") if k in cfg}
    return IngestConfig(**known)
