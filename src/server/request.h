// What every POST endpoint shares: request errors in each API's shape, thinking-mode
// selection (interface.md §6.5.2), sampling and length fields, tool conversion, and the
// prompt built so that client text can never become a control token (§8 item 1).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ds4/chat.h"
#include "ds4/sampler.h"
#include "ds4/tokenizer.h"
#include "server/scheduler.h"
#include "server/tool_memory.h"

namespace ds4::server {

using Json = nlohmann::ordered_json;

// A request the server refuses: HTTP status, message and the OpenAI-style `param`/`code`.
struct ApiError : std::runtime_error {
    int status;
    std::string param, code;
    Json extra;  // more fields of the error object (n_prompt_tokens, n_ctx)
    ApiError(int s, const std::string& message, std::string p = {}, std::string c = {})
        : std::runtime_error(message), status(s), param(std::move(p)), code(std::move(c)) {}
};

enum class ApiStyle { openai, anthropic };

// {"error":{"message","type","param","code"}} or Anthropic's {"type":"error","error":{…}}.
Json error_body(ApiStyle style, int status, const std::string& message, const std::string& param = {},
                const std::string& code = {}, const Json& extra = {});

// Parses a request body; malformed JSON or a non-object → 400 naming the position.
Json parse_body(const std::string& body);

// Typed field access; a present field of the wrong type → 400 naming the field.
std::optional<std::string> opt_string(const Json& j, const char* key);
std::optional<double> opt_number(const Json& j, const char* key);
std::optional<int64_t> opt_integer(const Json& j, const char* key);
std::optional<bool> opt_bool(const Json& j, const char* key);

// Model ids this server answers to.
inline constexpr const char* kModelId = "deepseek-v4-flash";
// Checks `model` (absent = default); unknown ids → 404 model_not_found.
std::string check_model(const Json& body);

// Thinking selection (§6.5.2) from the fields each API offers, then effective_thinking_mode.
struct ThinkingInputs {
    std::optional<bool> explicit_enabled;            // thinking / think
    std::optional<std::string> effort;               // reasoning_effort / output_config.effort / reasoning.effort
    bool effort_is_explicit = false;
};
ThinkingMode select_thinking(const ThinkingInputs& in, const std::string& model, uint64_t ctx);
// Reads `thinking` (bool or {"type":"enabled"|"disabled"}) and `think` into `in`.
void read_thinking_fields(const Json& body, ThinkingInputs& in);

// Client sampling knobs; thinking mode replaces them (the seed is kept, §4.2).
SamplingParams read_sampling(const Json& body, bool thinking, bool with_top_k_min_p);
// `stop` / `stop_sequences`: a string or an array of strings (at most 16).
std::vector<std::string> read_stops(const Json& body, const char* key);
// The first present of `keys`, else the server default; always ≥ 1.
uint64_t read_max_tokens(const Json& body, std::initializer_list<const char*> keys, uint64_t fallback);

// tool_choice of any API, checked against the request's tools (OpenAI-shaped, or null):
//   absent/null, "auto", {"type":"auto"}             -> auto
//   "none", {"type":"none"}                           -> none (tools leave the prompt)
//   "required", "any", {"type":"any"|"required"}       -> required (named when one tool)
//   {"type":"function","function":{"name":N}}          (Chat Completions)  -> named N
//   {"type":"function","name":N}                       (Responses)         -> named N
//   {"type":"tool","name":N}                           (Anthropic)         -> named N
// A forced choice without tools, or naming a tool that is not in `tools`, is a 400; so is
// a hosted tool (web_search…) this server cannot run. Forcing is done by prefilling the
// tool-call opening into the assistant turn (see ForcedCall in http.h, §8 item 17).
struct ToolChoice {
    enum class Kind { automatic, none, required, named };
    Kind kind = Kind::automatic;
    std::string name;  // Kind::named
    bool forced() const { return kind == Kind::required || kind == Kind::named; }
    bool tools_active() const { return kind != Kind::none; }
};
ToolChoice read_tool_choice(const Json& tool_choice, const Json& tools);

// The DSML bytes a forced call starts with: the tool block opener and the invoke header
// up to the name (`name` empty: up to `name="`, the model picks the tool).
std::string forced_call_prefix(const std::string& name);

// Assistant prefill (§8 item 4): when the last message is an assistant turn and `always`
// (Anthropic semantics) or it carries "prefix": true (DeepSeek's API), it is marked
// open ("wo_eos") so the model continues it. The generated text then follows the
// turn's </think>: the caller must parse it as non-thinking. Returns whether it did.
bool mark_prefill(Json& messages, bool always);

// The prompt as tokens. Client strings are rewritten before rendering so that every
// special-token string they contain becomes a private marker; after rendering, the
// markers are tokenized as plain text of the original string and everything else with
// encode_chat, so only the template's own control tokens are control tokens.
class PromptEncoder {
public:
    explicit PromptEncoder(Tokenizer tok);
    // OpenAI-shaped messages (+ request tools) → tokens. Throws ApiError 400 for bad input.
    // With a tool memory, assistant calls whose ids it knows are rendered with the bytes
    // the model sampled (exact replay, see tool_memory.h); `stats` (may be null) counts.
    std::vector<TokenId> encode_messages(Json messages, const Json* tools, ThinkingMode mode,
                                         bool tools_active, ToolReplayStats* stats = nullptr) const;
    // Null (the default, or --disable-exact-dsml-tool-replay): canonical rendering only.
    void set_tool_memory(ToolMemory* memory) { memory_ = memory; }
    ToolMemory* tool_memory() const { return memory_; }
    // Appends forced_call_prefix(name) to a prompt; special-token strings inside the
    // client's tool name stay plain text.
    void append_forced_call(std::vector<TokenId>& prompt, const std::string& name) const;
    const Tokenizer& tokenizer() const { return tok_; }

private:
    void neutralise(Json& j) const;
    std::vector<TokenId> tokenize(const std::string& rendered) const;
    Tokenizer tok_;
    std::vector<std::string> specials_;  // strings of chat_special_ids()
    std::vector<std::string> markers_;   // one private-use marker per special
    ToolMemory* memory_ = nullptr;
};

// System messages that come after the first non-system message move into the leading
// system message (text appended after a blank line; one is created when there is none),
// so the prompt always ends with the assistant's opener (see request.cpp).
void hoist_system_messages(Json& messages);

// The generation request for a prompt: length budget, DSML options, context check.
// Throws ApiError 400 context_length_exceeded (param = `param`) when the prompt does not
// leave room for one token.
GenRequest make_gen_request(std::vector<TokenId> prompt, SamplingParams sampling, uint64_t max_tokens,
                            ThinkingMode mode, bool parse_tools, std::vector<std::string> stops,
                            uint64_t ctx, const char* param);

// Unique ids: prefix + 24 (or 32) random hex digits.
std::string random_id(const char* prefix, int hex_digits = 24);

}  // namespace ds4::server
