"""A subscriber process for the fan-out test: subscribes to status with the asyncio or
the thread API, prints ``ready`` once it holds the current status, collects every
status until one whose ``lastError`` is ``"done"``, then prints one JSON line with the
``attempt`` of each delivery and its counters.

    python -m tests.support.ipc_subscriber_process PUB_ENDPOINT CMD_ENDPOINT asyncio|thread
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys

from ipc.messages import Status
from ipc.subscriber import Delivery, Subscriber, SubscriberThread


def report(attempts: list[int], seqs: list[int], counters: dict[str, int]) -> None:
    print(json.dumps({"attempts": attempts, "seqs": seqs, "counters": counters}), flush=True)


def collect(deliveries: list[Delivery]) -> tuple[list[int], list[int]]:
    statuses = [d for d in deliveries if isinstance(d.message, Status)]
    return [d.message.attempt for d in statuses], [d.seq for d in statuses]  # type: ignore[union-attr]


async def run_asyncio(publisher: str, commands: str) -> None:
    subscriber = Subscriber(publisher, commands, [b"status"])
    received: list[Delivery] = []
    async with asyncio.timeout(60):
        async for delivery in subscriber:
            if not received:
                print("ready", flush=True)
            received.append(delivery)
            if isinstance(delivery.message, Status) and delivery.message.last_error == "done":
                break
    await subscriber.close()
    attempts, seqs = collect(received[1:])
    t = subscriber.tracker.counters
    report(attempts, seqs, {"repeats": t.repeats, "gaps": t.gaps})


def run_thread(publisher: str, commands: str) -> None:
    deliveries: queue.Queue[Delivery] = queue.Queue()
    thread = SubscriberThread(publisher, commands, deliveries.put, [b"status"]).start()
    received = [deliveries.get(timeout=60)]
    print("ready", flush=True)
    while True:
        delivery = deliveries.get(timeout=60)
        received.append(delivery)
        if isinstance(delivery.message, Status) and delivery.message.last_error == "done":
            break
    thread.stop()
    attempts, seqs = collect(received[1:])
    t = thread.tracker.counters
    report(attempts, seqs, {"repeats": t.repeats, "gaps": t.gaps})


if __name__ == "__main__":
    publisher_endpoint, commands_endpoint, mode = sys.argv[1:4]
    if mode == "asyncio":
        asyncio.run(run_asyncio(publisher_endpoint, commands_endpoint))
    else:
        run_thread(publisher_endpoint, commands_endpoint)
