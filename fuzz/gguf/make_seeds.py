#!/usr/bin/env python3
"""Writes the small seed GGUF files in fuzz/gguf/seeds/ (deterministic output)."""
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)


def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return s(key) + struct.pack("<I", vtype) + payload


def arr(etype, items):
    return struct.pack("<IQ", etype, len(items)) + b"".join(items)


def gguf(kvs, tensors, data, alignment=32):
    """tensors: (name, dims, ggml_type, offset)."""
    out = struct.pack("<IIQQ", 0x46554747, 3, len(tensors), len(kvs)) + b"".join(kvs)
    for name, dims, gtype, offset in tensors:
        out += s(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", gtype, offset)
    out += b"\0" * (-len(out) % alignment)
    return out + data


def main():
    os.makedirs(HERE, exist_ok=True)
    seeds = {
        "empty.gguf": gguf([], [], b""),
        "scalars.gguf": gguf(
            [kv("u8", U8, b"\x07"), kv("i16", I16, struct.pack("<h", -3)),
             kv("u32", U32, struct.pack("<I", 43)), kv("f32", F32, struct.pack("<f", 1.5)),
             kv("b", BOOL, b"\x01"), kv("s", STRING, s("deepseek4")),
             kv("u64", U64, struct.pack("<Q", 65536)), kv("f64", F64, struct.pack("<d", 1e-6))],
            [], b""),
        "arrays.gguf": gguf(
            [kv("tok", ARRAY, arr(STRING, [s("a"), s(""), s("<think>")])),
             kv("r", ARRAY, arr(U32, [struct.pack("<I", x) for x in (0, 0, 4, 128)])),
             kv("c", ARRAY, arr(F32, [struct.pack("<f", 10.0)] * 3)),
             kv("n", ARRAY, arr(ARRAY, [arr(I8, [b"\x01", b"\xff"]), arr(STRING, [s("x")])]))],
            [], b""),
        "tensors.gguf": gguf(
            [kv("general.alignment", U32, struct.pack("<I", 64))],
            [("norm", [8], 0, 0), ("w", [32, 2], 8, 64), ("tid", [2, 2], 26, 192),
             ("e", [256, 1, 2], 16, 256)],
            bytes(range(256)) + bytes(132) + bytes(60)
            + bytes((i * 7) & 255 for i in range(132)),
            alignment=64),
    }
    for name, blob in seeds.items():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(blob)


if __name__ == "__main__":
    main()
