"""Names read from eval sets and written to files: file-name stems, attack radii, did-you-mean hints."""

from __future__ import annotations

import difflib
import re


def safe_name(eval_set: str) -> str:
    """The eval set as a file-name stem (``uap:xi=0.2,p=inf`` -> ``uap_xi0.2_pinf``)."""
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", eval_set).replace("=", "")


def eps_of(eval_set: str) -> float | None:
    """The ``eps=`` radius an eval set names, or None."""
    m = re.search(r"eps=([0-9.eE+-]+)", eval_set)
    return float(m.group(1)) if m else None


def close_match(name: str, have: list[str]) -> str:
    """A "did you mean X? " hint for an unknown name, or "" when nothing is close."""
    near = difflib.get_close_matches(name, have, n=1)
    return f"did you mean {near[0]}? " if near else ""
