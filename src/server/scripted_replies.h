// --test-script FILE: canned model turns for client integration tests.
//
// Agent clients (Codex, Claude Code, opencode, Pi) only show that their whole loop works
// against this server when the model calls a tool on cue, which random demo weights never
// do. A script gives chosen requests a fixed reply: the model still runs (prefill, KV,
// one decode step per token), but each generated token is taken from the reply instead
// of the sampler, so the DSML parser, streaming, tool-call ids, exact replay and the
// client's own tool execution are exercised exactly as with real weights.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ds4/tokenizer.h"

namespace ds4::server {

struct ScriptEntry {
    std::string match;  // a prompt containing this text gets `reply`
    std::string reply;  // raw model output: reasoning, </think>, text, DSML tool block
};

class ScriptedReplies {
public:
    // A JSON array of {"match": string, "reply": string}. Throws ds4::Error naming the
    // file and the entry that is malformed.
    static ScriptedReplies load(const std::string& path);
    static ScriptedReplies parse(const std::string& json_text, const std::string& origin);

    // The tokens to emit for a prompt, or nothing (sample as usual). The last entry whose
    // `match` occurs in the decoded prompt wins, so a follow-up turn (whose prompt still
    // holds the first question) can be matched by something only it contains, e.g. a tool
    // result. In thinking mode a reply without </think> gets one in front: the prompt
    // ended in <think>, and the reply is meant as the visible answer.
    std::optional<std::vector<TokenId>> pick(const Tokenizer& tok, std::span<const TokenId> prompt,
                                             bool thinking, std::size_t* index = nullptr) const;
    std::size_t size() const { return entries_.size(); }

private:
    std::vector<ScriptEntry> entries_;
};

}  // namespace ds4::server
