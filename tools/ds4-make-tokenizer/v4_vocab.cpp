#include "v4_vocab.h"

#include "ds4/error.h"

namespace ds4::tools {

namespace {

constexpr uint32_t kFirstAddedId = 128000;

struct V4Special {
    const char* text;
    uint32_t id;
};
// V4 control tokens not in V3 (or moved), from interface.md §1.3.
constexpr V4Special kV4Specials[] = {
    {"<｜System｜>", 128799},         {"<think>", 128821},
    {"</think>", 128822},             {"｜DSML｜", 128825},
    {"<｜latest_reminder｜>", 128828}, {"<｜action｜>", 128829},
    {"<｜query｜>", 128830},          {"<｜authority｜>", 128831},
    {"<｜domain｜>", 128832},         {"<｜title｜>", 128836},
    {"<｜read_url｜>", 128845},
};

std::string placeholder(uint32_t id) {
    return cat("<｜place▁holder▁no▁", id - kFirstAddedId, "｜>");
}

const nlohmann::json& require(const nlohmann::json& j, const char* key, const std::string& where) {
    if (!j.is_object() || !j.contains(key)) fail(where, ": missing \"", key, "\"");
    return j.at(key);
}

}  // namespace

V4Vocab make_v4_vocab(const nlohmann::json& tj, const std::string& source) {
    const nlohmann::json& model = require(tj, "model", source);
    if (model.value("type", "") != "BPE") fail(source, ": model.type is not \"BPE\"");
    V4Vocab v;
    v.tokens.assign(kV4VocabSize, std::string());
    v.types.assign(kV4VocabSize, 0);
    for (const auto& [text, id_json] : require(model, "vocab", source + " model").items()) {
        const auto id = id_json.get<int64_t>();
        if (id < 0 || id >= kFirstAddedId)
            fail(source, ": model.vocab id ", id, " of \"", text, "\" is outside 0..127999");
        v.tokens[id] = text;
        v.types[id] = 1;
    }
    for (const nlohmann::json& a : require(tj, "added_tokens", source)) {
        const auto id = a.at("id").get<int64_t>();
        if (id < 0 || id >= kV4VocabSize) fail(source, ": added token id ", id, " out of range");
        v.tokens[id] = a.at("content").get<std::string>();
        // (not json::value: g++ -O3 -Wnull-dereference flags its inlined type test)
        const auto special = a.find("special");
        if (special != a.end() && !special->is_boolean())
            fail(source, ": added token id ", id, " has a non-boolean \"special\"");
        v.types[id] = special != a.end() && special->get<bool>() ? 3 : 4;
    }
    for (const V4Special& s : kV4Specials) {
        v.tokens[s.id] = s.text;
        v.types[s.id] = 3;
    }
    for (uint32_t id = 0; id < kV4VocabSize; ++id) {
        if (!v.tokens[id].empty()) continue;
        if (id < kFirstAddedId) fail(source, ": model.vocab has no token with id ", id);
        v.tokens[id] = placeholder(id);
        v.types[id] = 3;
    }
    for (const nlohmann::json& m : require(model, "merges", source + " model")) {
        // tokenizers >= 0.20 writes merges as [left, right] pairs, older ones as "left right".
        if (m.is_array() && m.size() == 2)
            v.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
        else v.merges.push_back(m.get<std::string>());
    }
    return v;
}

}  // namespace ds4::tools
