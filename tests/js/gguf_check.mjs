// Parses a local GGUF file with @huggingface/gguf (an independent reader) and prints
// what it found as JSON, for ds4's cross-check test (tests/gguf/gguf_npm_crosscheck_test.cpp).
//
//   node tests/js/gguf_check.mjs FILE.gguf
//
// Output: { version, tensor_count, kv_count, tensor_data_offset,
//           metadata: { key: { type, subtype?, value } },
//           tensors: [ { name, shape, dtype, offset } ] }
// 64-bit integers (BigInt in JS) are printed as decimal strings so no precision is lost.
import { gguf } from "@huggingface/gguf";

const path = process.argv[2];
if (!path) {
    console.error("usage: node gguf_check.mjs FILE.gguf");
    process.exit(2);
}

const plain = (v) => {
    if (typeof v === "bigint") return v.toString();
    if (Array.isArray(v)) return v.map(plain);
    return v;
};

const pseudoKeys = new Set(["version", "tensor_count", "kv_count"]);

try {
    const { metadata, typedMetadata, tensorInfos, tensorDataOffset } = await gguf(path, {
        allowLocalFile: true,
        typedMetadata: true,
    });
    const out = {
        version: metadata.version,
        tensor_count: plain(metadata.tensor_count),
        kv_count: plain(metadata.kv_count),
        tensor_data_offset: plain(tensorDataOffset),
        metadata: {},
        tensors: tensorInfos.map((t) => ({
            name: t.name,
            shape: t.shape.map(plain),
            dtype: t.dtype,
            offset: plain(t.offset),
        })),
    };
    for (const [key, entry] of Object.entries(typedMetadata)) {
        if (pseudoKeys.has(key)) continue;
        const item = { type: entry.type, value: plain(entry.value) };
        if (entry.subType !== undefined) item.subtype = entry.subType;
        out.metadata[key] = item;
    }
    process.stdout.write(JSON.stringify(out) + "\n");
} catch (err) {
    console.error(`gguf_check: ${path}: ${err.message}`);
    process.exit(1);
}
