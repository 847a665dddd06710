#include "server/scripted_replies.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "ds4/error.h"

namespace ds4::server {

ScriptedReplies ScriptedReplies::load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("--test-script: cannot read " + path);
    std::ostringstream text;
    text << in.rdbuf();
    return parse(text.str(), path);
}

ScriptedReplies ScriptedReplies::parse(const std::string& json_text, const std::string& origin) {
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(json_text);
    } catch (const nlohmann::json::parse_error& e) {
        throw Error("--test-script " + origin + ": not JSON (" + e.what() + ")");
    }
    if (!j.is_array()) throw Error("--test-script " + origin + ": expected an array of {\"match\", \"reply\"}");
    ScriptedReplies s;
    for (std::size_t i = 0; i < j.size(); ++i) {
        const auto& e = j[i];
        const std::string where = "--test-script " + origin + ": entry " + std::to_string(i);
        if (!e.is_object()) throw Error(where + " is not an object");
        for (const char* key : {"match", "reply"})
            if (!e.contains(key) || !e[key].is_string()) throw Error(where + ": \"" + key + "\" must be a string");
        ScriptEntry entry{e["match"].get<std::string>(), e["reply"].get<std::string>()};
        if (entry.match.empty()) throw Error(where + ": \"match\" is empty");
        s.entries_.push_back(std::move(entry));
    }
    return s;
}

std::optional<std::vector<TokenId>> ScriptedReplies::pick(const Tokenizer& tok, std::span<const TokenId> prompt,
                                                          bool thinking, std::size_t* index) const {
    if (entries_.empty()) return std::nullopt;
    const std::string text = tok.decode(prompt);
    for (std::size_t i = entries_.size(); i-- > 0;) {
        if (text.find(entries_[i].match) == std::string::npos) continue;
        if (index) *index = i;
        std::string reply = entries_[i].reply;
        if (thinking && reply.find("</think>") == std::string::npos) reply = "</think>" + reply;
        return tok.encode_chat(reply);
    }
    return std::nullopt;
}

}  // namespace ds4::server
