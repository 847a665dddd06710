#!/usr/bin/env python3
"""Writes the seed inputs of ds4_safetensors_fuzz into seeds/ (small valid files)."""
import json
import os
import struct


def safetensors(header, data=b""):
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


SEEDS = {
    "fp8": safetensors(
        {"__metadata__": {"k": "v"},
         "layers.0.attn.wq_a.weight": {"dtype": "F8_E4M3", "shape": [2, 4], "data_offsets": [0, 8]},
         "layers.0.attn.wq_a.scale": {"dtype": "F8_E8M0", "shape": [1, 1], "data_offsets": [8, 9]}},
        bytes(range(0x30, 0x38)) + b"\x7f"),
    "fp4": safetensors(
        {"layers.0.ffn.experts.3.w1.weight": {"dtype": "I8", "shape": [1, 16], "data_offsets": [0, 16]},
         "layers.0.ffn.experts.3.w1.scale": {"dtype": "F8_E8M0", "shape": [1, 1], "data_offsets": [16, 17]}},
        bytes(range(16)) + b"\x7e"),
    "mixed": safetensors(
        {"embed.weight": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
         "layers.1.ffn.gate.tid2eid": {"dtype": "I64", "shape": [1], "data_offsets": [4, 12]},
         "x": {"dtype": "F16", "shape": [1], "data_offsets": [12, 14]},
         "y": {"dtype": "BOOL", "shape": [], "data_offsets": [14, 15]}},
        b"\x80\x3f\x00\x40" + struct.pack("<q", 5) + b"\x00\x3c\x01"),
}

if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
