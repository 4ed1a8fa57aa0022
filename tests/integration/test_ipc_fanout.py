"""Sixteen subscriber processes (half asyncio, half thread API) each receive every status
change, in order, with no repeats, although each newcomer's Last Value Cache re-send
reaches all the earlier ones."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from ipc.messages import Status
from tests.support.ipc_helpers import running_host

pytestmark = pytest.mark.timeout(90)

REPOSITORY = Path(__file__).resolve().parents[2]
PROCESSES = 16
CHANGES = 400


async def test_sixteen_subscriber_processes_get_every_change_in_order() -> None:
    async with running_host() as host:
        host.publisher.publish(Status(state="connecting", attempt=0))
        children = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.support.ipc_subscriber_process",
                host.endpoints.publisher,
                host.endpoints.commands,
                "asyncio" if index % 2 else "thread",
                cwd=REPOSITORY,
                stdout=asyncio.subprocess.PIPE,
            )
            for index in range(PROCESSES)
        ]
        try:
            async with asyncio.timeout(60):
                for child in children:
                    assert child.stdout is not None
                    assert (await child.stdout.readline()).strip() == b"ready"
            # Every process holds the present; now the changes.
            for attempt in range(1, CHANGES + 1):
                host.publisher.publish(Status(state="disconnected", attempt=attempt))
            host.publisher.publish(
                Status(state="connected", attempt=CHANGES + 1, last_error="done")
            )
            async with asyncio.timeout(60):
                outputs = [await child.communicate() for child in children]
        finally:
            for child in children:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
    expected = list(range(1, CHANGES + 2))
    for index, (stdout, _) in enumerate(outputs):
        result = json.loads(stdout)
        assert result["attempts"] == expected, f"process {index}"
        assert result["seqs"] == sorted(set(result["seqs"])), f"process {index}"
        assert result["counters"]["gaps"] == 0, f"process {index}"
    assert all(child.returncode == 0 for child in children)
    # Newcomers' cache re-sends really reached earlier subscribers and were dropped there.
    total_repeats = sum(json.loads(out)["counters"]["repeats"] for out, _ in outputs)
    assert total_repeats >= PROCESSES - 1
