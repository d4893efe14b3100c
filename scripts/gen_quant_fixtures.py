#!/usr/bin/env python3
"""Writes tests/fixtures/quant/: reference data from the PyPI `gguf` package (not Strata code).

Per type NAME:
  NAME.blocks    random but valid blocks (random bytes, sane f16 scales)
  NAME.deq.f32   gguf.quants.dequantize of NAME.blocks (little-endian float32)
and for the types gguf can quantize:
  NAME.qin.f32   a fixed float input
  NAME.qout      gguf.quants.quantize of it
Run from the repository root: python3 scripts/gen_quant_fixtures.py
"""
import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "quant"

# type -> (block bytes, block elements, byte offsets of f16 scale fields)
LAYOUT = {
    T.Q4_0: (18, 32, [0]),
    T.Q4_1: (20, 32, [0, 2]),
    T.Q5_0: (22, 32, [0]),
    T.Q5_1: (24, 32, [0, 2]),
    T.Q8_0: (34, 32, [0]),
    T.Q2_K: (84, 256, [80, 82]),
    T.Q3_K: (110, 256, [108]),
    T.Q4_K: (144, 256, [0, 2]),
    T.Q5_K: (176, 256, [0, 2]),
    T.Q6_K: (210, 256, [208]),
}
QUANTIZABLE = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.BF16, T.F16]


def sane_scales(rng, n):
    mag = rng.uniform(1e-3, 1.0, n) * rng.choice([-1.0, 1.0], n)
    return mag.astype(np.float16)


# MXFP4 (gpt-oss experts): 17-byte blocks of an E8M0 exponent and 16 bytes of nibbles. Exponent
# bytes are kept to scales 2^-10 .. 2^8 and the denormals 0 and 1, so no value overflows. Its own
# random stream, so the other types' files stay as they were.
def mxfp4(rng):
    blocks = rng.integers(0, 256, size=(24, 17), dtype=np.uint8)
    blocks[:, 0] = rng.choice([0, 1] + list(range(118, 137)), 24)
    (OUT / "MXFP4.blocks").write_bytes(blocks.tobytes())
    (OUT / "MXFP4.deq.f32").write_bytes(quants.dequantize(blocks.reshape(-1), T.MXFP4).astype("<f4").tobytes())
    x = rng.normal(0, 1, 512).astype(np.float32)
    x[:32] *= 50
    x[32:64] = 0
    x[64:96] = np.round(x[64:96] * 4) / 4
    (OUT / "MXFP4.qin.f32").write_bytes(x.astype("<f4").tobytes())
    (OUT / "MXFP4.qout").write_bytes(np.asarray(quants.quantize(x, T.MXFP4)).view(np.uint8).tobytes())


def main():
    rng = np.random.default_rng(20240611)
    OUT.mkdir(parents=True, exist_ok=True)
    for qtype, (nbytes, _, scale_offsets) in LAYOUT.items():
        n_blocks = 6
        blocks = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
        for off in scale_offsets:
            blocks[:, off:off + 2] = sane_scales(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
        deq = quants.dequantize(blocks.reshape(-1), qtype).astype("<f4")
        (OUT / f"{qtype.name}.blocks").write_bytes(blocks.tobytes())
        (OUT / f"{qtype.name}.deq.f32").write_bytes(deq.tobytes())
    for qtype in (T.F16, T.BF16):
        vals = rng.normal(0, 2, 512).astype(np.float32)
        if qtype == T.F16:
            raw = vals.astype(np.float16).view(np.uint8)
        else:
            raw = quants.quantize(vals, qtype).view(np.uint8)
        deq = quants.dequantize(raw.copy(), qtype).astype("<f4")
        (OUT / f"{qtype.name}.blocks").write_bytes(raw.tobytes())
        (OUT / f"{qtype.name}.deq.f32").write_bytes(deq.tobytes())
    for qtype in QUANTIZABLE:
        x = rng.normal(0, 1, 512).astype(np.float32)
        x[:32] *= 50  # one block of large values
        x[32:64] = 0  # one all-zero block
        x[64:96] = np.round(x[64:96] * 4) / 4  # exact quarters: ties in the rounding
        q = np.asarray(quants.quantize(x, qtype)).view(np.uint8)
        (OUT / f"{qtype.name}.qin.f32").write_bytes(x.astype("<f4").tobytes())
        (OUT / f"{qtype.name}.qout").write_bytes(q.tobytes())
    mxfp4(np.random.default_rng(20250805))
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
