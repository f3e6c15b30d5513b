"""Finding a benchmark's media files under the names its annotations use."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from .tasks import AUDIO, TaskSpec, _layout


# --------------------------------------------------------------------------- finding media
class MediaFolder:
    """The media files under a folder, by file name, by stem and (for YouTube ids) by the 11-character id."""

    def __init__(self, root: Path, extensions: frozenset[str]) -> None:
        self.root = root
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        self.by_youtube: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                stem, ext = os.path.splitext(name)
                if name.startswith(".") or ext.lower() not in extensions:
                    continue
                path = Path(dirpath) / name
                self.by_name.setdefault(name, path)
                self.by_stem.setdefault(stem, path)
                if len(stem) > 11 and stem[11] in "_-.":
                    self.by_youtube.setdefault(stem[:11], path)
                if stem.startswith("Y") and (len(stem) == 12 or (len(stem) > 12 and stem[12] in "_-.")):
                    self.by_youtube.setdefault(stem[1:12], path)

    def __len__(self) -> int:
        return len(self.by_name)

    def find(self, names: tuple[str, ...], *, youtube: bool = False) -> Path | None:
        for name in names:
            hit = self.by_name.get(name) or self.by_stem.get(name)
            if hit is not None:
                return hit
        if youtube and names:
            return self.by_youtube.get(names[0])
        return None


def _media_folder(spec: TaskSpec, media_dir: Path) -> MediaFolder:
    from ..media import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS

    if not media_dir.is_dir():
        raise UsageError(f"--media {media_dir}: no such directory; {_layout(spec)}")
    sub = media_dir / spec.folder
    root = sub if sub.is_dir() else media_dir
    extensions = VIDEO_EXTENSIONS if spec.kind != AUDIO else AUDIO_EXTENSIONS | VIDEO_EXTENSIONS
    folder = MediaFolder(Path(os.path.abspath(root)), extensions)
    if not len(folder):
        raise UsageError(f"{spec.name}: no media files in {root} (looked for {', '.join(sorted(extensions))}); {_layout(spec)}")
    return folder
