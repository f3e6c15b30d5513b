"""``python -m mmsearch.train synth-clip ...``: train the packaged synth-clip (see :mod:`mmsearch.train.synth_clip`)."""

from .synth_clip import main

raise SystemExit(main())
