"""Expected content of the engine's `/gen/<n>` object generator (engine/src/service/object.rs).

`GET /gen/<n>` returns exactly n bytes, a prefix of one infinite stream: a 64 KiB block of
SplitMix64 output (state starts at 0, each step adds 0x9E3779B97F4A7C15, words little-endian),
with block k XORed by (k mod 256). Byte i is a pure function of i, so any slice can be
recomputed: by a standby after failover, and by this harness to verify downloads.
"""

import hashlib

GEN_BLOCK = 1 << 16
_M64 = (1 << 64) - 1


def _pattern() -> bytes:
    out = bytearray()
    state = 0
    for _ in range(GEN_BLOCK // 8):
        state = (state + 0x9E3779B97F4A7C15) & _M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        z ^= z >> 31
        out += z.to_bytes(8, "little")
    return bytes(out)


PATTERN = _pattern()
# The 256 XOR variants of the block, built lazily.
_BLOCKS = {}


def _block(key: int) -> bytes:
    b = _BLOCKS.get(key)
    if b is None:
        b = bytes(x ^ key for x in PATTERN)
        _BLOCKS[key] = b
    return b


def gen_bytes(offset: int, length: int) -> bytes:
    """Return body bytes [offset, offset + length) of any /gen/<n> object (n >= offset + length)."""
    out = bytearray()
    off = offset
    end = offset + length
    while off < end:
        pos = off % GEN_BLOCK
        n = min(end - off, GEN_BLOCK - pos)
        key = (off // GEN_BLOCK) % 256
        out += _block(key)[pos:pos + n]
        off += n
    return bytes(out)


def gen_sha256(length: int) -> str:
    """sha256 hex digest of the body of /gen/<length>, streamed block by block."""
    h = hashlib.sha256()
    off = 0
    while off < length:
        n = min(GEN_BLOCK - off % GEN_BLOCK, length - off)
        h.update(_block((off // GEN_BLOCK) % 256)[off % GEN_BLOCK: off % GEN_BLOCK + n])
        off += n
    return h.hexdigest()


if __name__ == "__main__":
    import sys
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(gen_sha256(n))
