"""HTTP ``Content-Encoding``, decoded only within bounds (T-10).

The fetcher asks for ``Accept-Encoding: identity``. A server may apply gzip
or deflate anyway; then the body is decoded before hashing (the digest names
the entity, not the transfer form), under three bounds:

- a chain of at most :data:`MAX_CODINGS` encodings (``gzip, gzip, ...`` x1000
  is refused while the header is parsed, before any byte is read);
- decoded output handed out in pieces of at most :data:`PIECE` bytes, so the
  caller's byte limit (descriptor size + 1, or the manifest limit) stops a
  bomb after one piece, never after it has been inflated in memory;
- encoded input bounded too (:func:`wire_limit`), since deflate can spin
  on empty blocks that decode to nothing.

Only bodies of 200 responses are decoded: redirect and error bodies are never
decoded. A ``tar+gzip`` layer sent without ``Content-Encoding`` is bytes like
any other and is never decoded. Encodings other than gzip and deflate (br,
zstd, compress, anything unknown) are :class:`EncodingError`: an upstream
failure, not a verdict.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

#: gzip and deflate, each once; identity entries are ignored.
SUPPORTED = frozenset({"gzip", "x-gzip", "deflate"})
MAX_CODINGS = 1
#: Largest piece of decoded output produced at a time.
PIECE = 64 * 1024


class EncodingError(Exception):
    """An encoding that cannot be decoded here, or an encoded body that is broken."""


class EncodedTooLarge(Exception):
    """More encoded input than any entity within the limit needs."""


def parse_content_encoding(values: Iterable[str]) -> tuple[str, ...]:
    """The codings of ``Content-Encoding`` header values, in the order applied."""
    codings: list[str] = []
    for value in values:
        for item in value.split(","):
            coding = item.strip().lower()
            if coding in ("", "identity"):
                continue
            if coding not in SUPPORTED:
                raise EncodingError(f"unsupported Content-Encoding {coding[:40]!r}")
            codings.append(coding)
            if len(codings) > MAX_CODINGS:
                raise EncodingError(
                    f"Content-Encoding chain longer than {MAX_CODINGS}, expected at most"
                    f" {MAX_CODINGS}"
                )
    return tuple(codings)


def wire_limit(limit: int) -> int:
    """Encoded bytes allowed for an entity of at most ``limit`` bytes.

    Deflate's worst case (stored blocks) adds 5 bytes per 64 KiB, gzip a
    header and trailer; the slack is generous and still bounded.
    """
    return limit + limit // 100 + 64 * 1024


def decode(chunks: Iterator[bytes], coding: str, limit: int) -> Iterator[bytes]:
    """Decode ``chunks`` of one coding, yielding pieces of at most :data:`PIECE` bytes.

    Raises :class:`EncodedTooLarge` past ``wire_limit(limit)`` encoded bytes
    and :class:`EncodingError` for a corrupt, truncated or trailing-garbage
    stream.
    """
    gzip = coding in ("gzip", "x-gzip")
    decoder = zlib.decompressobj(zlib.MAX_WBITS | 16 if gzip else zlib.MAX_WBITS)
    first = True
    consumed = 0
    allowed = wire_limit(limit)
    for chunk in chunks:
        consumed += len(chunk)
        if consumed > allowed:
            raise EncodedTooLarge(f"more than {allowed} encoded bytes")
        if first and not gzip and chunk:
            # "deflate" is meant to be zlib-wrapped; some servers send raw deflate.
            decoder = _deflate_decoder(chunk)
        first = first and not chunk
        pending = chunk
        while pending:
            if decoder.eof:
                raise EncodingError("data after the end of the encoded body")
            piece = _inflate(decoder, pending)
            pending = decoder.unconsumed_tail
            if piece:
                yield piece
        # Output zlib still holds for input it has already consumed.
        while not decoder.eof:
            piece = _inflate(decoder, b"")
            if not piece:
                break
            yield piece
    if not decoder.eof:
        raise EncodingError("the encoded body ended before its end marker")
    if decoder.unused_data:
        raise EncodingError("data after the end of the encoded body")


def _inflate(decoder: zlib._Decompress, data: bytes) -> bytes:
    try:
        return decoder.decompress(data, PIECE)
    except zlib.error as exc:
        raise EncodingError(f"corrupt encoded body ({exc})") from None


def _deflate_decoder(head: bytes) -> zlib._Decompress:
    probe = zlib.decompressobj(zlib.MAX_WBITS)
    try:
        probe.decompress(head[:2])
    except zlib.error:
        return zlib.decompressobj(-zlib.MAX_WBITS)
    return zlib.decompressobj(zlib.MAX_WBITS)
