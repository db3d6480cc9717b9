"""One compiled pass that narrows PMP's exact band edge to a bracket around the previous one.

The empirical edge is the midpoint of the k-th and (k+1)-th smallest |W^| of a tensor (or of all
targets), recomputed after every step. A full selection (numpy's introselect) costs ~5 ms on the
1M-weight fc tensor here; but the edge moves little from one step to the next, so one pass counts
the magnitudes below a bracket [lo, hi) around the previous edge, copies the few inside it, and
keeps the smallest one above it; the selection then runs on the copied few. Same order
statistics, so the same edge to the bit; a bracket that misses falls back to the full selection.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True, boundscheck=False)
def bracket_pass(w, lo, hi, out, start):  # pragma: no cover - compiled
    """Over 1-D float array w: how many |w| < lo; |w| in [lo, hi) appended to out[start:] (as
    long as it has room); the smallest |w| >= hi (inf if none). Returns (below, written, min_above);
    written counts every magnitude in the bracket, also those that did not fit."""
    below = 0
    written = start
    room = out.shape[0]
    min_above = np.inf
    for i in range(w.shape[0]):
        a = abs(w[i])
        if a < lo:
            below += 1
        elif a < hi:
            if written < room:
                out[written] = a
            written += 1
        elif a < min_above:
            min_above = a
    return below, written - start, min_above
