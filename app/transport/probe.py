"""One bare MQTT 5 connection attempt: does the broker accept this certificate?

Used by the hub to check that the broker has taken up a new CRL (a revoked canary
certificate must be refused) and to end a removed cluster's session (connecting as it with
clean start takes its client id over, which disconnects it and discards its session). A
gmqtt client would retry and hide the answer; this sends CONNECT and reads CONNACK, once.

With TLS 1.3 a refused client certificate is only reported after the client's side of the
handshake has finished, so "refused" is whatever ends the connection before a successful
CONNACK arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl

CONNACK = 0x20


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id: str, keepalive_s: int = 10) -> bytes:
    """MQTT 5 CONNECT: clean start, session expiry 0, no will, no credentials."""
    ident = client_id.encode()
    variable = b"\x00\x04MQTT\x05\x02" + keepalive_s.to_bytes(2, "big") + b"\x00"
    payload = len(ident).to_bytes(2, "big") + ident
    body = variable + payload
    return b"\x10" + _varint(len(body)) + body


class Answer(enum.Enum):
    ACCEPTED = "accepted"
    """A successful CONNACK (the connection was then closed with a normal DISCONNECT)."""
    REFUSED = "refused"
    """The TLS handshake failed, or the broker closed the connection or answered CONNECT
    with an error code."""
    UNREACHABLE = "unreachable"
    """No TCP connection (or no answer in time): nothing is known."""


async def attempt(
    host: str, port: int, context: ssl.SSLContext, *, client_id: str = "", timeout_s: float = 5.0
) -> Answer:
    """Connect once with `context`'s certificate and say how the broker answered."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            try:
                reader, writer = await asyncio.open_connection(host, port, ssl=context)
            except ssl.SSLError:
                return Answer.REFUSED
            except OSError:
                return Answer.UNREACHABLE
            writer.write(connect_packet(client_id))
            await writer.drain()
            if (await reader.readexactly(1))[0] != CONNACK:
                return Answer.REFUSED
            length, shift = 0, 0
            while True:
                byte = (await reader.readexactly(1))[0]
                length += (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80 or shift > 21:
                    break
            body = await reader.readexactly(length)
            if len(body) < 2 or body[1] != 0:
                return Answer.REFUSED
            writer.write(b"\xe0\x00")  # DISCONNECT, normal
            await writer.drain()
            return Answer.ACCEPTED
    except TimeoutError:
        return Answer.UNREACHABLE
    except (OSError, EOFError, asyncio.IncompleteReadError):
        return Answer.REFUSED
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
