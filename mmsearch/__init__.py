"""mmsearch: multimodal vector search over your own videos, images and music.

The public names are imported lazily, so ``import mmsearch`` (and the decoder
worker processes, which import one submodule) stay light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Index": "api",
    "SearchResult": "api",
    "default_index_dir": "api",
    "index_paths": "api",
    "open_index": "api",
    "remove_paths": "api",
    "upgrade_index": "api",
    "verify_index": "api",
    "ingest_config": "api",
    "IngestConfig": "ingest",
    "IngestReport": "ingest",
    "MMSearchError": "errors",
    "UsageError": "errors",
    "DecodeError": "errors",
    "QueryInputError": "errors",
    "SubtitleError": "errors",
    "EncoderError": "errors",
    "UnknownModelError": "errors",
    "EncoderMismatchError": "errors",
    "IndexCorruptError": "errors",
    "IndexNotFoundError": "errors",
    "NotAnIndexError": "errors",
    "IndexFormatError": "errors",
    "IndexWriteError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mmsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
