"""MLLP framing and the few HL7 fields the soak reads (standard library only).

A frame is 0x0B, the message, 0x1C 0x0D. Segments end with CR; MSH-10 is the
control id the accounting follows from the sender to the downstream.
"""

import socket

START, END = b"\x0b", b"\x1c\x0d"


def frame(message: bytes) -> bytes:
    return START + message + END


def control_id(message: bytes) -> str:
    """MSH-10 of a message, or '' when it has none."""
    first = message.split(b"\r", 1)[0]
    fields = first.split(b"|")
    # MSH-1 is the field separator itself, so MSH-10 is the tenth item.
    return fields[9].decode("ascii", "replace") if first.startswith(b"MSH") and len(fields) > 9 else ""


def ack_code(message: bytes) -> str:
    """MSA-1 of an acknowledgment, or '' when it has no MSA."""
    for segment in message.split(b"\r"):
        if segment.startswith(b"MSA|"):
            return segment.split(b"|")[1].decode("ascii", "replace")
    return ""


def ack_for(message: bytes) -> bytes:
    """An AA acknowledgment naming the message's control id."""
    cid = control_id(message)
    return (
        f"MSH|^~\\&|SOAKRECV|SOAK|SOAKSEND|SOAK|20260101000000||ACK^A01^ACK|A{cid}|P|2.5.1\r"
        f"MSA|AA|{cid}\r"
    ).encode("ascii")


class FrameReader:
    """Reads whole frames from a blocking socket; bytes outside frames are dropped."""

    def __init__(self, sock: socket.socket, limit: int = 1 << 20):
        self.sock, self.buf, self.limit = sock, b"", limit

    def read(self) -> bytes:
        while True:
            start = self.buf.find(START)
            if start >= 0:
                end = self.buf.find(END, start)
                if end >= 0:
                    message, self.buf = self.buf[start + 1 : end], self.buf[end + 2 :]
                    return message
            if len(self.buf) > self.limit:
                raise ValueError("frame larger than the limit")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
