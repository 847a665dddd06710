#include "kvstore/kvc_format.h"

#include <openssl/evp.h>

#include <cstring>

#include "ds4/error.h"

namespace ds4::kvstore {
namespace {

void put_u32(uint8_t* p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put_u64(uint8_t* p, uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get_u32(const uint8_t* p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}
uint64_t get_u64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

constexpr uint8_t kMagic[3] = {'K', 'V', 'C'};
constexpr uint8_t kToolMapMagic[3] = {'K', 'T', 'M'};

}  // namespace

const char* save_reason_name(SaveReason r) {
    switch (r) {
        case SaveReason::Cold:
            return "cold";
        case SaveReason::Continued:
            return "continued";
        case SaveReason::Evict:
            return "evict";
        case SaveReason::Shutdown:
            return "shutdown";
        case SaveReason::AgentSystem:
            return "agent-system";
        case SaveReason::AgentSession:
            return "agent-session";
        case SaveReason::Unknown:
            break;
    }
    return "unknown";
}

std::array<uint8_t, kPrefixBytes> encode_prefix(const KvcHeader& h) {
    std::array<uint8_t, kPrefixBytes> b{};
    std::memcpy(b.data(), kMagic, 3);
    b[3] = 1;
    b[4] = h.quant_bits;
    b[5] = static_cast<uint8_t>(h.reason);
    b[6] = h.ext_flags;
    put_u32(&b[8], h.tokens);
    put_u32(&b[12], h.hits);
    put_u32(&b[16], h.ctx);
    put_u64(&b[24], static_cast<uint64_t>(h.created));
    put_u64(&b[32], static_cast<uint64_t>(h.last_used));
    put_u64(&b[40], h.payload_bytes);
    put_u32(&b[48], h.text_bytes);
    return b;
}

bool decode_prefix(std::span<const uint8_t, kPrefixBytes> b, KvcHeader* out, std::string* why) {
    const auto reject = [&](const char* reason) {
        if (why) *why = reason;
        return false;
    };
    if (std::memcmp(b.data(), kMagic, 3) != 0) return reject("bad magic (expected \"KVC\")");
    if (b[3] != 1) return reject("unsupported KVC version (expected 1)");
    KvcHeader h;
    h.quant_bits = b[4];
    h.reason = b[5] <= 6 ? static_cast<SaveReason>(b[5]) : SaveReason::Unknown;
    h.ext_flags = b[6];
    h.tokens = get_u32(&b[8]);
    h.hits = get_u32(&b[12]);
    h.ctx = get_u32(&b[16]);
    h.created = static_cast<int64_t>(get_u64(&b[24]));
    h.last_used = static_cast<int64_t>(get_u64(&b[32]));
    h.payload_bytes = get_u64(&b[40]);
    h.text_bytes = get_u32(&b[48]);
    if (h.tokens == 0) return reject("token count is 0");
    if (h.quant_bits != 2 && h.quant_bits != 4) return reject("quant bits not 2 or 4");
    *out = h;
    return true;
}

std::string encode_tool_map(std::span<const ToolIdEntry> entries) {
    std::string s(8, '\0');
    std::memcpy(s.data(), kToolMapMagic, 3);
    s[3] = 1;
    put_u32(reinterpret_cast<uint8_t*>(s.data() + 4), static_cast<uint32_t>(entries.size()));
    for (const ToolIdEntry& e : entries) {
        if (e.id.empty() || e.id.size() > kMaxToolIdBytes)
            fail("tool-id map: id \"", e.id, "\" must be 1..", kMaxToolIdBytes, " bytes");
        if (e.dsml.empty() || e.dsml.size() > kMaxToolDsmlBytes)
            fail("tool-id map: DSML block of id \"", e.id, "\" must be 1..", kMaxToolDsmlBytes,
                 " bytes");
        uint8_t lens[8];
        put_u32(lens, static_cast<uint32_t>(e.id.size()));
        put_u32(lens + 4, static_cast<uint32_t>(e.dsml.size()));
        s.append(reinterpret_cast<const char*>(lens), 8);
        s += e.id;
        s += e.dsml;
    }
    return s;
}

std::vector<ToolIdEntry> decode_tool_map(std::span<const uint8_t> b, uint32_t max_entries,
                                         bool* stopped_early) {
    std::vector<ToolIdEntry> out;
    if (stopped_early) *stopped_early = false;
    if (b.size() < 8 || std::memcmp(b.data(), kToolMapMagic, 3) != 0 || b[3] != 1) return out;
    const uint32_t n = get_u32(&b[4]);
    size_t off = 8;
    const auto stop = [&] {
        if (stopped_early) *stopped_early = true;
        return out;
    };
    if (n > max_entries) return stop();
    for (uint32_t i = 0; i < n; ++i) {
        if (b.size() - off < 8) return stop();
        const uint32_t id_len = get_u32(&b[off]);
        const uint32_t dsml_len = get_u32(&b[off + 4]);
        off += 8;
        if (id_len < 1 || id_len > kMaxToolIdBytes || dsml_len < 1 || dsml_len > kMaxToolDsmlBytes)
            return stop();
        if (b.size() - off < uint64_t{id_len} + dsml_len) return stop();
        const char* p = reinterpret_cast<const char*>(b.data() + off);
        out.push_back({std::string(p, id_len), std::string(p + id_len, dsml_len)});
        off += uint64_t{id_len} + dsml_len;
    }
    return out;
}

std::vector<std::string_view> find_dsml_tool_blocks(std::string_view text) {
    struct Markers {
        std::string_view start, end;
    };
    static constexpr Markers kPairs[] = {
        {"\n\n<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>"},
        {"<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>"},
        {"\n\n<DSML｜tool_calls>", "</DSML｜tool_calls>"},
        {"<DSML｜tool_calls>", "</DSML｜tool_calls>"},
        {"\n\n<tool_calls>", "</tool_calls>"},
        {"<tool_calls>", "</tool_calls>"},
    };
    std::vector<std::string_view> blocks;
    size_t from = 0;
    while (from < text.size()) {
        size_t best_start = std::string_view::npos, best_end = 0;
        for (const Markers& m : kPairs) {
            const size_t s = text.find(m.start, from);
            if (s == std::string_view::npos || s >= best_start) continue;
            const size_t e = text.find(m.end, s + m.start.size());
            if (e == std::string_view::npos) continue;
            best_start = s;
            best_end = e + m.end.size();
        }
        if (best_start == std::string_view::npos) break;
        blocks.push_back(text.substr(best_start, best_end - best_start));
        from = best_end;
    }
    return blocks;
}

std::string sha1_hex(std::string_view text) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(text.data(), text.size(), md, &len, EVP_sha1(), nullptr) != 1 || len != 20)
        fail("SHA-1 of ", text.size(), " bytes failed (OpenSSL EVP_Digest)");
    static constexpr char kHex[] = "0123456789abcdef";
    std::string hex(40, '0');
    for (unsigned i = 0; i < 20; ++i) {
        hex[2 * i] = kHex[md[i] >> 4];
        hex[2 * i + 1] = kHex[md[i] & 15];
    }
    return hex;
}

bool parse_entry_name(std::string_view name, std::string* sha) {
    if (name.size() != 43 || name.substr(40) != ".kv") return false;
    std::string lower(40, '0');
    for (size_t i = 0; i < 40; ++i) {
        const char c = name[i];
        if (c >= '0' && c <= '9')
            lower[i] = c;
        else if (c >= 'a' && c <= 'f')
            lower[i] = c;
        else if (c >= 'A' && c <= 'F')
            lower[i] = static_cast<char>(c - 'A' + 'a');
        else
            return false;
    }
    if (sha) *sha = std::move(lower);
    return true;
}

}  // namespace ds4::kvstore
