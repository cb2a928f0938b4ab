#!/usr/bin/env python3
"""A downstream MLLP receiver that records every control id, then ACKs it.

    recorder.py --port 31401 --ids received.txt

Each message's MSH-10 is appended to `--ids` (one a line, arrival order,
written unbuffered) before its AA goes back, so a receiver stopped between
the two has the message although its sender never heard so: the sender
sends it again, and the id appears twice. The file is appended to, so a
restarted receiver continues the same record.
"""

import argparse
import os
import socket
import threading

from mllp import FrameReader, ack_for, control_id, frame


def serve(conn: socket.socket, ids: int, lock: threading.Lock) -> None:
    reader = FrameReader(conn)
    with conn:
        while True:
            try:
                message = reader.read()
            except (OSError, ValueError, ConnectionError):
                return
            with lock:
                os.write(ids, f"{control_id(message)}\n".encode())
            try:
                conn.sendall(frame(ack_for(message)))
            except OSError:
                return


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ids", required=True)
    a = p.parse_args()
    ids = os.open(a.ids, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    lock = threading.Lock()
    server = socket.create_server((a.host, a.port))  # SO_REUSEADDR: restarts at once
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn, ids, lock), daemon=True).start()


if __name__ == "__main__":
    raise SystemExit(main())
