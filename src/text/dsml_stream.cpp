#include "text/dsml_stream.h"

#include "ds4/error.h"

#include <array>
#include <utility>

namespace ds4::text {
namespace {

constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kThinkClose = "</think>";

// Block openers of the three accepted spellings (§3.2), with the prefix each one fixes
// for the rest of the block. Detection is by position (the first opener in the answer),
// not by ds4's priority order: a stream cannot wait for the whole text to decide.
struct Syntax {
    std::string_view opener;
    std::string_view prefix;
};
constexpr std::array<Syntax, 3> kSyntaxes = {{
    {"<｜DSML｜tool_calls>", "｜DSML｜"},
    {"<DSML｜tool_calls>", "DSML｜"},
    {"<tool_calls>", ""},
}};

// Tags read up to '>' are bounded so a model that never closes one cannot grow the
// buffer without limit; real headers are a name and two short attributes.
constexpr std::size_t kMaxTagBytes = 4096;

constexpr std::array<std::pair<std::string_view, std::string_view>, 5> kXmlEntities = {{
    {"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&apos;", "'"}}};

bool starts_with(std::string_view text, std::string_view prefix) {
    return text.substr(0, prefix.size()) == prefix;
}

std::string_view trim_left(std::string_view text) {
    while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
    return text;
}

bool is_delta(DsmlEventKind kind) {
    return kind == DsmlEventKind::reasoning || kind == DsmlEventKind::content ||
           kind == DsmlEventKind::arguments;
}

}  // namespace

DsmlStream::DsmlStream(const DsmlOptions& options) : options_(options) {
    message_.has_reasoning = options.thinking;
}

void DsmlStream::feed(std::string_view bytes, std::vector<DsmlEvent>& out) {
    out_ = &out;
    for (char c : bytes) process(c);
    out_ = nullptr;
}

void DsmlStream::finish(std::vector<DsmlEvent>& out) {
    if (state_ == State::finished) return;
    out_ = &out;
    if (state_ == State::lead) {
        // Too short to be "<think>": the bytes are ordinary text of the first section.
        std::string held = std::exchange(hold_, {});
        state_ = options_.thinking ? State::reasoning : State::content;
        reprocess(held);
    }
    switch (state_) {
        case State::reasoning:
            emit_text(DsmlEventKind::reasoning, std::exchange(hold_, {}));
            break;
        case State::content:
            emit_text(DsmlEventKind::content, std::exchange(ws_, {}) + std::exchange(hold_, {}));
            break;
        case State::done:
        case State::finished:
        case State::lead:
            break;
        default:
            message_.unterminated = true;
            fail_block("the text ended inside a tool block (no closing tag)", {});
            emit_text(DsmlEventKind::content, std::exchange(ws_, {}) + std::exchange(hold_, {}));
            break;
    }
    state_ = State::finished;
    out_ = nullptr;
}

bool DsmlStream::in_tool_block() const {
    switch (state_) {
        case State::lead:
        case State::reasoning:
        case State::content:
        case State::done:
        case State::finished:
            return false;
        default:
            return true;
    }
}

DsmlSyntaxState DsmlStream::syntax_state() const {
    const bool close_tag_started = hold_.size() >= 2 && starts_with(tags_.param_close, hold_);
    switch (state_) {
        case State::lead:
            return options_.thinking ? DsmlSyntaxState::reasoning : DsmlSyntaxState::outside;
        case State::reasoning:
            return DsmlSyntaxState::reasoning;
        case State::content:
            // "<｜DSML｜" (one special token after '<') all but commits to a tool block;
            // a bare "<t" may well be "<table>", so plain XML is not forced early.
            if (hold_.size() >= 7 && (starts_with(kSyntaxes[0].opener, hold_) ||
                                      starts_with(kSyntaxes[1].opener, hold_)))
                return DsmlSyntaxState::structural;
            return DsmlSyntaxState::outside;
        case State::loose_probe:
            return trim_left(hold_).size() >= 2 ? DsmlSyntaxState::structural
                                                : DsmlSyntaxState::string_body;
        case State::string_value:
            return close_tag_started ? DsmlSyntaxState::structural : DsmlSyntaxState::string_body;
        case State::json_value:
            if (close_tag_started) return DsmlSyntaxState::structural;
            return json_in_string_ ? DsmlSyntaxState::json_string
                                   : DsmlSyntaxState::json_structural;
        case State::done:
        case State::finished:
            return DsmlSyntaxState::outside;
        default:
            return DsmlSyntaxState::structural;
    }
}

// --- dispatch ---------------------------------------------------------------------------

void DsmlStream::process(char c) {
    switch (state_) {
        case State::lead: on_lead(c); return;
        case State::reasoning: on_reasoning(c); return;
        case State::content: on_content(c); return;
        case State::done: ++message_.ignored_after_block; return;
        case State::finished: return;
        default:
            raw_ += c;
            on_block_byte(c);
            return;
    }
}

void DsmlStream::reprocess(std::string_view bytes) {
    for (char c : bytes) process(c);
}

void DsmlStream::on_block_byte(char c) {
    switch (state_) {
        case State::block_body:
        case State::invoke_body:
        case State::nested_body: on_token(c); return;
        case State::invoke_tag:
        case State::param_tag: on_tag(c); return;
        case State::loose_probe: on_loose_probe(c); return;
        case State::string_value: on_string_value(c); return;
        case State::json_value: on_json_value(c); return;
        default: process(c); return;  // not reached: callers are inside a block
    }
}

// --- text outside tool blocks -----------------------------------------------------------

void DsmlStream::on_lead(char c) {
    hold_ += c;
    if (hold_ == kThinkOpen) {
        hold_.clear();
        message_.has_reasoning = true;
        state_ = State::reasoning;
        return;
    }
    if (starts_with(kThinkOpen, hold_)) return;
    std::string held = std::exchange(hold_, {});
    state_ = options_.thinking ? State::reasoning : State::content;
    reprocess(held);
}

void DsmlStream::on_reasoning(char c) {
    hold_ += c;
    if (hold_ == kThinkClose) {
        hold_.clear();
        state_ = State::content;
        return;
    }
    // Release every byte that can no longer begin </think>.
    std::size_t keep = 0;
    while (keep < hold_.size() && !starts_with(kThinkClose, std::string_view(hold_).substr(keep)))
        ++keep;
    emit_text(DsmlEventKind::reasoning, std::string_view(hold_).substr(0, keep));
    hold_.erase(0, keep);
}

void DsmlStream::on_content(char c) {
    if (!hold_.empty()) {  // a partial block opener
        hold_ += c;
        for (const Syntax& syntax : kSyntaxes) {
            if (hold_ == syntax.opener) {
                open_block(syntax.prefix);
                return;
            }
        }
        for (const Syntax& syntax : kSyntaxes)
            if (starts_with(syntax.opener, hold_)) return;
        // Not an opener after all: its '<' is text, the rest may begin a new opener.
        std::string rest = hold_.substr(1);
        emit_text(DsmlEventKind::content, std::exchange(ws_, {}) + '<');
        hold_.clear();
        reprocess(rest);
        return;
    }
    if (is_space(c)) {
        // Whitespace right before a block is its separator, not content (§3.3 step 3).
        ws_ += c;
        return;
    }
    if (c == '<' && options_.parse_tools) {
        hold_.assign(1, '<');  // not `= "<"`: g++ 12 -O3 raises a false -Wrestrict on it
        return;
    }
    emit_text(DsmlEventKind::content, std::exchange(ws_, {}) + c);
}

// --- the tool block ---------------------------------------------------------------------

void DsmlStream::open_block(std::string_view prefix) {
    const std::string p(prefix);
    tags_ = Tags{"</" + p + "tool_calls>", "<" + p + "invoke",         "</" + p + "invoke>",
                 "<" + p + "parameter",    "</" + p + "parameter>", "&lt;/" + p + "parameter>"};
    raw_ = std::exchange(ws_, {}) + std::exchange(hold_, {});
    token_.clear();
    calls_before_block_ = message_.tool_calls.size();
    first_call_of_block_ = next_call_;
    in_nested_ = false;
    state_ = State::block_body;
}

void DsmlStream::on_token(char c) {
    if (token_.empty() && is_space(c)) return;
    token_ += c;
    std::array<const std::string*, 3> expected{};
    std::size_t n = 0;
    if (state_ == State::block_body) expected = {&tags_.block_close, &tags_.invoke_open};
    if (state_ == State::invoke_body) expected = {&tags_.invoke_close, &tags_.param_open};
    if (state_ == State::nested_body)
        expected = {&tags_.param_open, &tags_.param_close, &tags_.invoke_close};
    while (n < expected.size() && expected[n] != nullptr) ++n;
    for (std::size_t i = 0; i < n; ++i) {
        if (token_ == *expected[i]) {
            on_token_complete(std::exchange(token_, {}));
            return;
        }
    }
    for (std::size_t i = 0; i < n; ++i)
        if (starts_with(*expected[i], token_)) return;
    std::string wanted;
    for (std::size_t i = 0; i < n; ++i) wanted += (i ? " or " : "") + *expected[i];
    std::string found = token_;
    fail_block(cat("expected ", wanted, " in the tool block, found '", found, "'"),
               std::move(found));
}

void DsmlStream::on_token_complete(const std::string& token) {
    if (token == tags_.block_close) {
        message_.block_closed = true;
        message_.raw_block = raw_;
        state_ = State::done;
        emit_event(DsmlEventKind::block_closed, {});
    } else if (token == tags_.invoke_open) {
        tag_.clear();
        state_ = State::invoke_tag;
    } else if (token == tags_.param_open) {
        tag_.clear();
        param_is_leaf_ = in_nested_;
        state_ = State::param_tag;
    } else if (token == tags_.param_close) {  // stray close ending a loose nested value
        emit_args("}");
        in_nested_ = false;
        state_ = State::invoke_body;
    } else if (token == tags_.invoke_close) {
        if (in_nested_) emit_args("}");
        in_nested_ = false;
        end_call();
    }
}

void DsmlStream::on_tag(char c) {
    if (c == '>') {
        const std::string attributes = std::exchange(tag_, {});
        if (state_ == State::invoke_tag) on_invoke_tag(attributes);
        else on_param_tag(attributes);
        return;
    }
    if (tag_.empty() && !is_space(c)) {
        // "<｜DSML｜invokeX" or "<parameters": not the tag we were promised.
        fail_block(cat("'", state_ == State::invoke_tag ? tags_.invoke_open : tags_.param_open,
                       "' is not followed by a space or '>'"),
                   std::string(1, c));
        return;
    }
    tag_ += c;
    if (tag_.size() > kMaxTagBytes)
        fail_block(cat("a tag is longer than ", kMaxTagBytes, " bytes"), {});
}

void DsmlStream::on_invoke_tag(std::string_view attributes) {
    const auto name = find_attribute(parse_tag_attributes(attributes), "name");
    if (!name || name->empty()) {
        fail_block(cat("invoke tag without a name attribute: '", attributes, "'"), {});
        return;
    }
    current_call_ = next_call_++;
    params_in_call_ = 0;
    keys_in_call_.clear();
    message_.tool_calls.push_back(DsmlToolCall{*name, {}, {}});
    emit_event(DsmlEventKind::call_begin, *name);
    emit_args("{");
    state_ = State::invoke_body;
}

void DsmlStream::on_param_tag(std::string_view attributes) {
    const auto parsed = parse_tag_attributes(attributes);
    const auto name = find_attribute(parsed, "name");
    if (!name) {
        fail_block(cat("parameter tag without a name attribute: '", attributes, "'"), {});
        return;
    }
    const auto string_attr = find_attribute(parsed, "string");
    ValueKind kind = ValueKind::string;
    if (string_attr && (*string_attr == "false" || *string_attr == "False")) kind = ValueKind::json;
    // Only a top-level parameter without string=… may open the loose nested form (§3.3).
    if (!string_attr && !param_is_leaf_) kind = ValueKind::loose;
    begin_param(*name, param_is_leaf_);
    hold_.clear();
    if (kind == ValueKind::string) {
        emit_args("\"");
        state_ = State::string_value;
    } else if (kind == ValueKind::json) {
        json_.clear();
        json_in_string_ = json_escaped_ = false;
        state_ = State::json_value;
    } else {
        state_ = State::loose_probe;
    }
}

void DsmlStream::begin_param(const std::string& name, bool leaf) {
    std::size_t& count = leaf ? params_in_nested_ : params_in_call_;
    if (!leaf) {
        for (const std::string& key : keys_in_call_) {
            if (key == name) {
                message_.tool_calls.back().warnings.push_back(
                    cat("parameter '", name, "' appears more than once (all kept)"));
                break;
            }
        }
        keys_in_call_.push_back(name);
    }
    param_name_ = name;
    std::string key(count++ ? "," : "");  // appended, not `"," + ...`: false -Wrestrict at -O3
    key += json_quote(name);
    key += ':';
    emit_args(key);
}

void DsmlStream::on_loose_probe(char c) {
    hold_ += c;
    const std::string_view head = trim_left(hold_);
    if (head.empty()) return;
    if (head == tags_.param_open) {
        // <parameter name="outer"><parameter name="a">…: the value is an object of leaves.
        hold_.clear();
        emit_args("{");
        in_nested_ = true;
        params_in_nested_ = 0;
        param_is_leaf_ = true;
        tag_.clear();
        state_ = State::param_tag;
        return;
    }
    if (starts_with(tags_.param_open, head)) return;
    // Plain text after all: a string value that begins with the held bytes. They cannot
    // contain a whole close tag (they are a prefix of the open tag plus one byte).
    std::string held = std::exchange(hold_, {});
    emit_args("\"");
    state_ = State::string_value;
    for (char b : held) on_block_byte(b);
}

void DsmlStream::on_string_value(char c) {
    hold_ += c;
    while (!hold_.empty()) {
        if (hold_ == tags_.param_close) {
            hold_.clear();
            end_string_value();
            return;
        }
        bool could_continue = starts_with(tags_.param_close, hold_);
        if (options_.entities == DsmlEntities::close_tag_only) {
            if (hold_ == tags_.escaped_close) {
                put_value_bytes(tags_.param_close);
                hold_.clear();
                return;
            }
            could_continue = could_continue || starts_with(tags_.escaped_close, hold_);
        } else {
            for (const auto& [entity, decoded] : kXmlEntities) {
                if (hold_ == entity) {
                    put_value_bytes(decoded);
                    hold_.clear();
                    return;
                }
                could_continue = could_continue || starts_with(entity, hold_);
            }
        }
        if (could_continue) return;
        put_value_bytes(std::string_view(hold_).substr(0, 1));
        hold_.erase(0, 1);
    }
}

void DsmlStream::on_json_value(char c) {
    hold_ += c;
    while (!hold_.empty()) {
        if (hold_ == tags_.param_close) {
            hold_.clear();
            end_json_value();
            return;
        }
        if (starts_with(tags_.param_close, hold_)) return;
        const char b = hold_.front();
        hold_.erase(0, 1);
        json_ += b;
        // Track string literals only to classify the position for greedy forcing.
        if (json_escaped_) json_escaped_ = false;
        else if (json_in_string_ && b == '\\') json_escaped_ = true;
        else if (b == '"') json_in_string_ = !json_in_string_;
    }
}

void DsmlStream::end_string_value() {
    std::string tail;
    value_writer_.flush(tail);
    emit_args(tail + "\"");
    state_ = in_nested_ ? State::nested_body : State::invoke_body;
}

void DsmlStream::end_json_value() {
    const std::string_view value = trim_space(json_);
    if (value.empty()) {
        emit_args("null");
    } else if (is_json_value(value)) {
        emit_args(minify_json(value));
    } else {
        // ds4 turned the whole arguments object into {} here; keeping the text loses
        // nothing and the client (or the model, on the next turn) can see what was meant.
        message_.tool_calls.back().warnings.push_back(
            cat("parameter '", param_name_, "': string=\"false\" value is not valid JSON, ",
                "kept as a string"));
        emit_args(json_quote(value));
    }
    json_.clear();
    state_ = in_nested_ ? State::nested_body : State::invoke_body;
}

void DsmlStream::end_call() {
    emit_args("}");
    emit_event(DsmlEventKind::call_end, {});
    state_ = State::block_body;
}

void DsmlStream::fail_block(std::string reason, std::string refeed) {
    // All or nothing per block (§3.6): a half-parsed block is worth nothing to a client,
    // so its calls are withdrawn and its bytes become answer text, exactly as sampled.
    if (message_.error.empty()) message_.error = std::move(reason);
    message_.recovered = true;
    if (message_.tool_calls.size() > calls_before_block_) {
        const std::size_t current = current_call_;
        current_call_ = first_call_of_block_;
        emit_event(DsmlEventKind::calls_aborted, {});
        current_call_ = current;
        message_.tool_calls.resize(calls_before_block_);
    }
    std::string text = raw_.substr(0, raw_.size() - refeed.size());
    raw_.clear();
    token_.clear();
    tag_.clear();
    hold_.clear();
    json_.clear();
    value_writer_ = JsonStringWriter{};
    in_nested_ = false;
    state_ = State::content;
    emit_text(DsmlEventKind::content, text);
    // The bytes that broke the block may begin a real opener; scan them as content.
    reprocess(refeed);
}

// --- output -----------------------------------------------------------------------------

void DsmlStream::emit_text(DsmlEventKind kind, std::string_view text) {
    if (text.empty()) return;
    if (kind == DsmlEventKind::reasoning) message_.reasoning += text;
    else message_.content += text;
    emit_event(kind, std::string(text));
}

void DsmlStream::emit_args(std::string_view text) {
    if (text.empty() || message_.tool_calls.empty()) return;
    message_.tool_calls.back().arguments += text;
    emit_event(DsmlEventKind::arguments, std::string(text));
}

void DsmlStream::put_value_bytes(std::string_view bytes) {
    std::string escaped;
    value_writer_.put(bytes, escaped);
    emit_args(escaped);
}

void DsmlStream::emit_event(DsmlEventKind kind, std::string text) {
    if (out_ == nullptr) return;
    const std::size_t call = kind == DsmlEventKind::reasoning || kind == DsmlEventKind::content
                                 ? 0
                                 : current_call_;
    if (is_delta(kind) && !out_->empty() && out_->back().kind == kind &&
        out_->back().call == call) {
        out_->back().text += text;
        return;
    }
    out_->push_back(DsmlEvent{kind, call, std::move(text)});
}

}  // namespace ds4::text
