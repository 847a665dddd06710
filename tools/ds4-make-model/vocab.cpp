// Byte-level vocabulary for synthetic models (layout in vocab.h).
#include "vocab.h"

#include <unordered_map>

#include "ds4/error.h"

namespace ds4::synth {

namespace {

struct Special {
    const char* text;
    uint32_t v4_id;  // its id in the DeepSeek V4 vocabulary (interface.md §1.3)
};

// BOS, EOS and pad first: the packed layout keeps them at 0, 1, 2 like V4.
constexpr Special kSpecials[] = {
    {"<｜begin▁of▁sentence｜>", 0},
    {"<｜end▁of▁sentence｜>", 1},
    {"<｜▁pad▁｜>", 2},
    {"<｜System｜>", 128799},
    {"<｜fim▁hole｜>", 128800},
    {"<｜fim▁begin｜>", 128801},
    {"<｜fim▁end｜>", 128802},
    {"<｜User｜>", 128803},
    {"<｜Assistant｜>", 128804},
    {"<|EOT|>", 128805},
    {"<｜tool▁calls▁begin｜>", 128806},
    {"<｜tool▁calls▁end｜>", 128807},
    {"<｜tool▁call▁begin｜>", 128808},
    {"<｜tool▁call▁end｜>", 128809},
    {"<｜tool▁outputs▁begin｜>", 128810},
    {"<｜tool▁outputs▁end｜>", 128811},
    {"<｜tool▁output▁begin｜>", 128812},
    {"<｜tool▁output▁end｜>", 128813},
    {"<｜tool▁sep｜>", 128814},
    {"<think>", 128821},
    {"</think>", 128822},
    {"｜DSML｜", 128825},
    {"<｜latest_reminder｜>", 128828},
    {"<｜action｜>", 128829},
    {"<｜query｜>", 128830},
    {"<｜authority｜>", 128831},
    {"<｜domain｜>", 128832},
    {"<｜title｜>", 128836},
    {"<｜read_url｜>", 128845},
};
constexpr uint32_t kNumSpecials = sizeof kSpecials / sizeof kSpecials[0];
constexpr uint32_t kFullLayoutMin = 128846;  // one past the largest V4 special id
constexpr uint32_t kFirstByteId = 3;

// Common English (and a little code) merges in byte-level form: Ġ = space, Ċ = newline.
// Each side is a byte token or the result of an earlier merge.
constexpr const char* kMerges[] = {
    "Ġ t",  "Ġ a",   "h e",  "i n",    "r e",   "o n",   "Ġt he", "e r",   "Ġ s",   "a t",   "Ġ w",
    "Ġ o",  "e n",   "Ġ c",  "i t",    "i s",   "a n",   "o r",   "e s",   "Ġ b",   "e d",   "Ġ f",
    "in g", "Ġ p",   "o u",  "Ġa n",   "a l",   "a r",   "Ġt o",  "Ġ m",   "Ġo f",  "Ġ in",  "Ġ d",
    "Ġ h",  "Ġan d", "i c",  "a s",    "l e",   "Ġt h",  "i on",  "o m",   "l l",   "en t",  "Ġ n",
    "Ġ l",  "s t",   "Ġ re", "v e",    "Ġ e",   "r o",   "l y",   "Ġb e",  "Ġ g",   "Ġ T",   "c t",
    "Ġ y",  "Ġ is",  "Ġw h", "Ġf or",  "c e",   "Ġ I",   "Ġo n",  "Ġ S",   "Ġy ou", "Ġ A",   "Ġ C",
    "Ġs t", "i m",   "Ġ it", "Ġth at", "Ġw as", "Ġh is", "Ġh e",  "ĠT he", "Ġ Ġ",   "ĠĠ ĠĠ", "Ċ Ċ",
    "Ġ =",  "( )",   "Ġ {",  "Ġ }",    "Ġ (",
};

void append_utf8(std::string& s, uint32_t cp) {
    if (cp < 0x80) {
        s += static_cast<char>(cp);
    } else if (cp < 0x800) {
        s += static_cast<char>(0xc0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        s += static_cast<char>(0xe0 | (cp >> 12));
        s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        s += static_cast<char>(0x80 | (cp & 0x3f));
    }
}

bool is_printable_byte(uint32_t b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}

// Assigns tokens to ids, refusing duplicates (ds4 looks tokens up by string).
class VocabBuilder {
  public:
    explicit VocabBuilder(uint32_t n) {
        v_.tokens.resize(n);
        v_.types.assign(n, 0);  // 0 = id not assigned yet
    }

    bool free(uint32_t id) const { return v_.types[id] == 0; }

    void put(uint32_t id, std::string text, int32_t type) {
        if (!free(id) || ids_.count(text))
            fail("synthetic vocab: duplicate token or id ", id, " '", text, "'");
        ids_[text] = id;
        v_.tokens[id] = std::move(text);
        v_.types[id] = type;
    }

    // Next free id at or after `from`; size() when full.
    uint32_t next_free(uint32_t from) const {
        while (from < v_.tokens.size() && !free(from)) ++from;
        return from;
    }

    bool has(const std::string& t) const { return ids_.count(t) != 0; }
    uint32_t size() const { return static_cast<uint32_t>(v_.tokens.size()); }
    Vocab& vocab() { return v_; }

  private:
    Vocab v_;
    std::unordered_map<std::string, uint32_t> ids_;
};

constexpr int32_t kNormal = 1;
constexpr int32_t kControl = 3;

// Adds merges while free ids remain; returns the id after the last one used.
uint32_t add_merges(VocabBuilder& b, uint32_t id) {
    for (const char* m : kMerges) {
        id = b.next_free(id);
        if (id >= b.size()) break;
        const std::string merge = m;
        const size_t space = merge.find(' ');
        const std::string left = merge.substr(0, space), right = merge.substr(space + 1);
        if (!b.has(left) || !b.has(right))
            fail("synthetic vocab: merge '", merge, "' uses an unknown token");
        b.put(id, left + right, kNormal);
        b.vocab().merges.push_back(merge);
    }
    return id;
}

void fill_placeholders(VocabBuilder& b) {
    uint32_t n = 0;
    for (uint32_t id = b.next_free(0); id < b.size(); id = b.next_free(id + 1))
        b.put(id, cat("<｜place▁holder▁no▁", n++, "｜>"), kControl);
}

}  // namespace

const std::vector<std::string>& required_special_tokens() {
    static const std::vector<std::string> k = {"<｜begin▁of▁sentence｜>",
                                               "<｜end▁of▁sentence｜>",
                                               "<｜User｜>",
                                               "<｜Assistant｜>",
                                               "<think>",
                                               "</think>",
                                               "｜DSML｜"};
    return k;
}

uint32_t min_vocab_size() {
    return 256 + kNumSpecials;
}

std::string byte_token(uint8_t byte) {
    // Non-printable bytes take code points 256, 257, ... in ascending byte order.
    uint32_t cp = byte;
    if (!is_printable_byte(byte)) {
        cp = 256;
        for (uint32_t b = 0; b < byte; ++b) cp += is_printable_byte(b) ? 0 : 1;
    }
    std::string s;
    append_utf8(s, cp);
    return s;
}

Vocab make_byte_vocab(uint32_t n_vocab) {
    if (n_vocab < min_vocab_size())
        fail("n_vocab ", n_vocab, " is too small for the byte-level vocabulary: it needs at least ",
             min_vocab_size(), " tokens (256 bytes + ", kNumSpecials, " special tokens)");
    VocabBuilder b(n_vocab);
    const bool full = n_vocab >= kFullLayoutMin;
    uint32_t next = 0;
    for (const Special& s : kSpecials) {
        // Packed layout: BOS/EOS/pad at 0..2, the rest right after the bytes.
        const uint32_t id =
            full ? s.v4_id : (s.v4_id < kFirstByteId ? s.v4_id : kFirstByteId + 256 + next++);
        b.put(id, s.text, kControl);
    }
    for (uint32_t byte = 0; byte < 256; ++byte)
        b.put(kFirstByteId + byte, byte_token(static_cast<uint8_t>(byte)), kNormal);
    add_merges(b, kFirstByteId + 256);
    fill_placeholders(b);
    return std::move(b.vocab());
}

Vocab read_vocab_gguf(const std::string& path) {
    const gguf::File f = gguf::File::open(path);
    Vocab v;
    for (std::string_view t : f.get_string_array("tokenizer.ggml.tokens")) v.tokens.emplace_back(t);
    for (std::string_view m : f.get_string_array("tokenizer.ggml.merges")) v.merges.emplace_back(m);
    for (int64_t t : f.get_int_array("tokenizer.ggml.token_type"))
        v.types.push_back(static_cast<int32_t>(t));
    if (v.tokens.empty()) fail(path, ": tokenizer.ggml.tokens is empty");
    if (v.types.size() != v.tokens.size())
        fail(path, ": tokenizer.ggml.token_type has ", v.types.size(), " entries, expected ",
             v.tokens.size(), " (one per token)");
    v.bos = f.require_u32("tokenizer.ggml.bos_token_id");
    v.eos = f.require_u32("tokenizer.ggml.eos_token_id");
    v.pad = f.get_u32("tokenizer.ggml.padding_token_id").value_or(v.eos);
    return v;
}

void write_tokenizer(gguf::Writer& w, const Vocab& v) {
    w.add_string("tokenizer.ggml.model", "gpt2");
    w.add_string("tokenizer.ggml.pre", "joyai-llm");
    w.add_array_string("tokenizer.ggml.tokens", v.tokens);
    w.add_array_i32("tokenizer.ggml.token_type", v.types);
    w.add_array_string("tokenizer.ggml.merges", v.merges);
    w.add_u32("tokenizer.ggml.bos_token_id", v.bos);
    w.add_u32("tokenizer.ggml.eos_token_id", v.eos);
    w.add_u32("tokenizer.ggml.padding_token_id", v.pad);
}

}  // namespace ds4::synth
