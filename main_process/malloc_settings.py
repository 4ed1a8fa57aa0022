"""How the main process's C allocator keeps memory it frees, on Linux with glibc.

Owns: ``reuse_freed_buffers``, two ``mallopt`` settings made once as ``run`` starts.

Why: shipping allocates and frees buffers of half a megabyte to a few megabytes all the
time (a read, the chunks cut from it, each copy a Socket.IO packet is made of). With
glibc's defaults, free memory beyond a few megabytes at the top of a heap goes back to
the kernel and is taken again a moment later, and every page of it is then faulted in
anew. Measured here over a 200 MB warm append (``bench/pipeline_ceiling.py``'s, Node.js
server, 6 runs of the code before and 6 after, alternating): 26,000-65,000 page faults
with the defaults, 6,100-6,600 with these settings; system time 0.33-0.41 s → 0.23-0.29
s; client CPU 4.52 → 4.08 s/GB (medians). The price is memory kept for reuse: up to
``TRIM_THRESHOLD_BYTES`` free at the top of each heap, about 5 MiB more resident after a
burst here; the main process's memory with 1 GiB waiting is unchanged (58 MiB).

- ``M_MMAP_THRESHOLD``: blocks below it come from the heap (reused) rather than from a
  fresh ``mmap`` each time. Set, it also stops glibc's own adjustment of both values.
- ``M_TRIM_THRESHOLD``: free memory at the top of a heap is returned to the kernel only
  beyond this.

Elsewhere (Windows, macOS, musl) nothing is changed: their allocators are not glibc's,
and this is a cost measure, not a guarantee.
"""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024


def reuse_freed_buffers(platform: str = sys.platform) -> bool:
    """Make the two settings (see the module docstring); whether they were made."""
    if not platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return False
    # Only glibc has both gnu_get_libc_version and these mallopt parameters.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    made = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if made:
        logger.debug(
            "freed blocks under %d MiB come from the heap, which keeps up to %d MiB free",
            MMAP_THRESHOLD_BYTES >> 20,
            TRIM_THRESHOLD_BYTES >> 20,
        )
    return made
