"""Reporting a benchmark's result: table rows and markdown."""

from __future__ import annotations

import os
from typing import Any


# --------------------------------------------------------------------------- reporting
def metric_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the metrics table shared by the terminal and the markdown output."""
    m = result["metrics"]
    if "VCMR" in m:
        ks = list(m["VR"])
        header = ["", "IoU"] + ks
        rows = []
        for name in ("VCMR", "SVMR"):
            for thd, recalls in m[name].items():
                rows.append([name, thd] + [f"{recalls[k]:.2f}" for k in ks])
        rows.append(["VR", "-"] + [f"{m['VR'][k]:.2f}" for k in ks])
        return header, rows
    header = list(m)
    return header, [[f"{m[k]:.2f}" if k != "MdR" else f"{m[k]:g}" for k in header]]


def encoder_label(identity: dict[str, Any]) -> str:
    """``model (pretrained)``, a packaged or local weights file by its name without the hash."""
    pretrained = str(identity.get("pretrained", "?")).split("@sha256:")[0]
    return f"{identity.get('model', '?')} ({os.path.basename(pretrained.rstrip('/')) or pretrained})"


def metrics_markdown(result: dict[str, Any]) -> str:
    """The result as a small markdown report (a title line, a metrics table, the setup)."""
    header, rows = metric_rows(result)
    lines = [
        f"## mmsearch bench {result['task']}",
        "",
        f"{result['n_queries']} queries, {result.get('n_candidates', '?')} candidates; "
        f"encoder {encoder_label(result.get('encoder', {}))}; {result.get('protocol', '')}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    missing = result.get("missing_media", {})
    if missing.get("items"):
        lines += ["", f"{missing['items']} media files were not found; their {missing['queries']} queries are left out."]
    return "\n".join(lines) + "\n"
