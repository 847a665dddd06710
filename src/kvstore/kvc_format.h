// KVC v1 disk-cache file layout (formats.md §6.2–§6.5): a 48-byte header, the rendered
// text section, the opaque session payload, then the optional KTM tool-id map section.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ds4::kvstore {

enum class SaveReason : uint8_t {
    Unknown = 0,
    Cold = 1,
    Continued = 2,
    Evict = 3,
    Shutdown = 4,
    AgentSystem = 5,
    AgentSession = 6,
};
const char* save_reason_name(SaveReason r);

// Extension flag bits (header byte 6). Only bit 0 adds a section; bits 1-2 describe the text.
inline constexpr uint8_t kExtToolMap = 1;
inline constexpr uint8_t kExtResponsesText = 2;
inline constexpr uint8_t kExtThinkingText = 4;

inline constexpr size_t kHeaderBytes = 48;
inline constexpr size_t kPrefixBytes = 52;  // header + u32 text_bytes

struct KvcHeader {
    uint8_t quant_bits = 2;
    SaveReason reason = SaveReason::Unknown;
    uint8_t ext_flags = 0;
    uint32_t tokens = 0;
    uint32_t hits = 0;
    uint32_t ctx = 0;
    int64_t created = 0;
    int64_t last_used = 0;
    uint64_t payload_bytes = 0;
    uint32_t text_bytes = 0;  // the u32 right after the header

    // Bytes of header + text + payload; extension sections follow.
    uint64_t body_end() const { return kPrefixBytes + uint64_t{text_bytes} + payload_bytes; }
};

// The 52 leading bytes (header + text length), little-endian as ds4 writes them.
std::array<uint8_t, kPrefixBytes> encode_prefix(const KvcHeader& h);

// Decodes and checks the listing rules of §6.4 except the file-size one. Returns false
// and sets *why (e.g. "bad magic", "token count is 0") when the entry must not be listed.
bool decode_prefix(std::span<const uint8_t, kPrefixBytes> bytes, KvcHeader* out, std::string* why);

// One KTM entry: an API tool-call id and the exact DSML block the model sampled for it.
struct ToolIdEntry {
    std::string id;
    std::string dsml;
    bool operator==(const ToolIdEntry&) const = default;
};

inline constexpr uint32_t kMaxToolIdBytes = 256;
inline constexpr uint32_t kMaxToolDsmlBytes = 512u << 20;

std::string encode_tool_map(std::span<const ToolIdEntry> entries);

// Tolerant reader (§6.5): wrong magic/version yields nothing; a bad or short entry stops
// parsing but keeps the entries read so far. *stopped_early tells whether that happened.
std::vector<ToolIdEntry> decode_tool_map(std::span<const uint8_t> bytes, uint32_t max_entries,
                                         bool* stopped_early = nullptr);

// DSML tool-call blocks in a rendered text, earliest-start marker pair first (§6.5).
std::vector<std::string_view> find_dsml_tool_blocks(std::string_view text);

// Lowercase hex SHA-1, the cache key of a rendered text.
std::string sha1_hex(std::string_view text);

// True iff name is "<40 hex>.kv" (case-insensitive hex); *sha gets the lowercase hex.
bool parse_entry_name(std::string_view name, std::string* sha);

}  // namespace ds4::kvstore
