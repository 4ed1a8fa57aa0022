"""Holds the instance lock of a data directory until killed (for the kill -9 test).

python -m tests.support.ipc_lock_holder DATA_DIR
"""

from __future__ import annotations

import sys

from ipc.instance import InstanceLock

if __name__ == "__main__":
    lock = InstanceLock(sys.argv[1])
    print("held" if lock.acquire() else "refused", flush=True)
    sys.stdin.read()  # until the test kills us (or closes our stdin)
