"""``malloc_settings``: with the settings, freed buffers are reused instead of faulted in
anew; without them (the control), the same allocations fault on every round."""

from __future__ import annotations

import subprocess
import sys

from harness.server_process import REPOSITORY
from main_process.malloc_settings import reuse_freed_buffers

# Eight 1 MiB buffers taken and freed 40 times, as shipping takes and frees its reads and
# packet copies; prints the page faults of rounds 2 to 40 (round 1 grows the heap).
_ROUNDS_SCRIPT = """
import resource, sys
from main_process.malloc_settings import reuse_freed_buffers
if sys.argv[1] == "tuned":
    assert reuse_freed_buffers()
blocks = [None] * 8
def round_of_buffers():
    for index in range(8):
        blocks[index] = b"x" * (1 << 20)
    for index in range(8):
        blocks[index] = None
round_of_buffers()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(39):
    round_of_buffers()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _ROUNDS_SCRIPT, mode],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(out.stdout.strip())


def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    default, tuned = page_faults("default"), page_faults("tuned")
    pages_per_round = 8 * (1 << 20) // 4096
    # The control: glibc gives the 8 MiB back after each round and faults it in again.
    assert default > 20 * pages_per_round, default
    assert tuned < pages_per_round, (tuned, default)


def test_nothing_is_changed_off_linux() -> None:
    assert reuse_freed_buffers("win32") is False
    assert reuse_freed_buffers("darwin") is False
