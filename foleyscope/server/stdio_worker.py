"""An embedded-queue worker process: `python -m foleyscope.server.stdio_worker ENGINE_JSON DATA_DIR NAME`.

The server writes JSON lines to its stdin (`{"op": "run", "spec": ..., "attempt": n}`, `{"op": "cancel",
"id": ...}`, `{"op": "stop"}`) and reads its events as JSON lines from the original stdout; fd 1 is
pointed at stderr so that nothing a library prints can corrupt that channel. A closed stdin (the server
is gone, even SIGKILLed) ends the process at once."""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

from foleyscope.engine.jobs import CancelToken
from foleyscope.server.config import EngineSpec
from foleyscope.server.worker import FoleyWorker


class _Channel:
    """Events out, one JSON line each, from any thread."""

    def __init__(self, out: BinaryIO) -> None:
        self._out, self._lock = out, threading.Lock()

    def send(self, event: dict[str, Any]) -> None:
        data = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self._out.write(data)
            self._out.flush()


def _read_commands(jobs: queue.Queue, current: dict[str, CancelToken]) -> None:
    """stdin -> the job queue; cancel sets the running job's token; EOF or stop ends the process."""
    for line in sys.stdin.buffer:
        msg = json.loads(line)
        if msg["op"] == "run":
            current[msg["spec"]["id"]] = CancelToken()  # before the job is queued: no cancel is missed
            jobs.put(msg)
        elif msg["op"] == "cancel" and msg["id"] in current:
            current[msg["id"]].cancel()
        elif msg["op"] == "stop":
            for token in current.values():
                token.cancel()
            break
    os._exit(0)


def main(argv: list[str]) -> None:
    engine, data_dir, name = EngineSpec.from_json(argv[0]), Path(argv[1]), argv[2]
    channel = _Channel(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = FoleyWorker(engine, data_dir, channel.send, name)
    jobs: queue.Queue = queue.Queue()
    current: dict[str, CancelToken] = {}
    threading.Thread(target=_read_commands, args=(jobs, current), daemon=True).start()  # stop works while loading
    try:
        worker.load()
    except Exception as exc:  # noqa: BLE001 - told to the server, which stops respawning a worker that cannot load
        channel.send({"type": "worker", "worker": name, "state": "broken",
                      "error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
        raise SystemExit(3) from None
    while True:
        msg = jobs.get()
        token = current[msg["spec"]["id"]]
        end = worker.run(msg["spec"], token, msg.get("attempt", 1))
        current.pop(msg["spec"]["id"], None)
        channel.send(end)


if __name__ == "__main__":
    main(sys.argv[1:])
