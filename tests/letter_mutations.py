"""Mutations of letter files for fuzzing the letter reader and parser.

Each mutation takes the bytes of a letter file (text or PDF) and a seeded
:class:`random.Random` and returns new bytes; the same seed gives the same bytes. The CI
fuzz test (``tests/data/test_fuzz_letters.py``) drives them with Hypothesis and the
long run (``experiments/fuzz_letters.py``) with plain seeds.
"""

from __future__ import annotations

import random
from collections.abc import Callable

#: A mutation: ``(letter bytes, rng) -> mutated bytes``.
Mutation = Callable[[bytes, random.Random], bytes]

# Unicode junk, as UTF-8 bytes ("surrogatepass" keeps lone surrogates representable).
_JUNK_TEXT: tuple[str, ...] = (
    "\x00",
    "\x01\x02\x03\x1b[31m\x7f",
    "\ud800",
    "\udfff",
    "\udc00MRI\ud800",
    "\ufeff",
    "\u202e\u202d\u200b\u2028\u2029",
    "e\u0301\u0301\u0301\u0301\u0301\u0301\u0301\u0301",
    "\U0001f600\U0001f9e0",
    "\uffff\ufffe\ufffd",
    "\x85\x9d",
    "\r",
    "\f",
    "\t\t\t",
    "Ã©â€™",
)
JUNK: tuple[bytes, ...] = (
    *(t.encode("utf-8", "surrogatepass") for t in _JUNK_TEXT),
    b"\xff\xfe",
    b"\xfe\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\x80\x81\x8d\x8f\x90",
)

# Lines that steer the letter parser: headings, decisions, labels, page furniture.
MARKERS: tuple[bytes, ...] = (
    b"CLINICAL CASE SUMMARY",
    b"IMR ISSUES, DECISIONS AND RATIONALES",
    b"HOW THE IMR FINAL DETERMINATION WAS MADE",
    b"Lumbar MRI: Upheld",
    b": Overturned",
    b"Upheld",
    b"Decision rationale:",
    b"MAXIMUS guideline:",
    b"was the original request",
    b"State(s) of Licensure:",
    b"Page 2 of 6",
    b"",
)

# Units repeated into one long line.
_LONG_UNITS: tuple[bytes, ...] = (
    b"a",
    b" ",
    b"word ",
    b"was the original request ",
    b"Board Certified in Pain and ",
    b"52 year old ",
    b"injury on 03-18-2013 ",
    b"Decision rationale: ",
    b": ",
    b"\xc3\xa9",
)


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    """XOR 1-16 random bytes with a random non-zero mask."""
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    return bytes(out)


def zero_chunk(data: bytes, rng: random.Random) -> bytes:
    """Overwrite a chunk of 1-4,096 bytes with zeros."""
    if not data:
        return data
    size = rng.choice((1, 8, 64, 512, 4096))
    start = rng.randrange(len(data))
    return data[:start] + bytes(min(size, len(data) - start)) + data[start + size :]


def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut the file at a random point (possibly to nothing)."""
    return data[: rng.randrange(len(data) + 1)]


def duplicate_lines(data: bytes, rng: random.Random) -> bytes:
    """Repeat 1-5 random lines 1-50 times in place."""
    lines = data.split(b"\n")
    for _ in range(rng.randint(1, 5)):
        i = rng.randrange(len(lines))
        lines[i : i + 1] = [lines[i]] * rng.choice((2, 3, 10, 50))
    return b"\n".join(lines)


def shuffle_lines(data: bytes, rng: random.Random) -> bytes:
    """Shuffle the lines of a random window of 2-200 lines."""
    lines = data.split(b"\n")
    size = rng.randint(2, 200)
    start = rng.randrange(max(1, len(lines) - 1))
    window = lines[start : start + size]
    rng.shuffle(window)
    lines[start : start + size] = window
    return b"\n".join(lines)


def insert_junk(data: bytes, rng: random.Random) -> bytes:
    """Insert Unicode junk (control characters, lone surrogates, BOMs, bidi marks,
    invalid UTF-8) 1-8 times at random positions."""
    out = data
    for _ in range(rng.randint(1, 8)):
        junk = rng.choice(JUNK) * rng.choice((1, 1, 3, 100))
        at = rng.randrange(len(out) + 1)
        out = out[:at] + junk + out[at:]
    return out


def insert_markers(data: bytes, rng: random.Random) -> bytes:
    """Insert 1-6 parser-steering lines (headings, decisions, labels) at line starts."""
    lines = data.split(b"\n")
    for _ in range(rng.randint(1, 6)):
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(MARKERS))
    return b"\n".join(lines)


def long_line(data: bytes, rng: random.Random) -> bytes:
    """Insert one line of 1,000-400,000 bytes at a line start (or join the whole file
    into one line)."""
    lines = data.split(b"\n")
    if rng.random() < 0.1:
        return b" ".join(lines)
    unit = rng.choice(_LONG_UNITS)
    line = unit * (rng.choice((1_000, 20_000, 100_000, 400_000)) // len(unit))
    lines.insert(rng.randrange(len(lines) + 1), line)
    return b"\n".join(lines)


def reencode(data: bytes, rng: random.Random) -> bytes:
    """Re-encode UTF-8 text as UTF-16/32 (with or without a BOM), UTF-8 with a BOM or
    cp1252."""
    try:
        text = data.decode("utf-8", errors="surrogatepass")
    except UnicodeDecodeError:  # an earlier mutation broke the UTF-8
        text = data.decode("utf-8", errors="replace")
    encoding = rng.choice(("utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp1252", "utf-8-sig"))
    # Lone surrogates stay lone in UTF-16/32 ("surrogatepass"); cp1252 cannot hold them.
    return text.encode(encoding, errors="surrogatepass" if "utf" in encoding else "replace")


#: Every mutation, by name.
MUTATIONS: dict[str, Mutation] = {
    "flip_bytes": flip_bytes,
    "zero_chunk": zero_chunk,
    "truncate": truncate,
    "duplicate_lines": duplicate_lines,
    "shuffle_lines": shuffle_lines,
    "insert_junk": insert_junk,
    "insert_markers": insert_markers,
    "long_line": long_line,
    "reencode": reencode,
}


def mutate(data: bytes, names: list[str], rng: random.Random) -> bytes:
    """Apply the named mutations in order.

    Args:
        data: the letter file's bytes.
        names: keys of :data:`MUTATIONS`.
        rng: the seeded source of every random choice.

    Returns:
        The mutated bytes.
    """
    for name in names:
        data = MUTATIONS[name](data, rng)
    return data
