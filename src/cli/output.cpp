#include "cli/output.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <limits>
#include <numeric>

#include "ds4/error.h"

namespace ds4::cli {

AnswerPrinter::AnswerPrinter(Tokenizer tokenizer, ThinkingMode mode, bool color, std::FILE* out)
    : tok_(tokenizer), decoder_(std::move(tokenizer)), color_(color), out_(out),
      in_reasoning_(mode != ThinkingMode::none) {}

void AnswerPrinter::write(std::string_view bytes) {
    if (bytes.empty()) return;
    set_grey(in_reasoning_);
    std::fwrite(bytes.data(), 1, bytes.size(), out_);
    at_line_start_ = bytes.back() == '\n';
}

void AnswerPrinter::set_grey(bool on) {
    if (!color_ || on == grey_) return;
    const std::string_view code = on ? kGrey : kReset;
    std::fwrite(code.data(), 1, code.size(), out_);
    grey_ = on;
}

void AnswerPrinter::token(TokenId id) {
    tok_.decode_append(id, raw_);
    const SpecialTokens& s = tok_.specials();
    if (id == s.think) {
        in_reasoning_ = true;
    } else if (id == s.think_end) {
        write(decoder_.finish());
        if (in_reasoning_ && !at_line_start_) write("\n");
        in_reasoning_ = false;
        set_grey(false);
    } else {
        write(decoder_.push(id));
    }
    std::fflush(out_);
}

void AnswerPrinter::finish() {
    write(decoder_.finish());
    set_grey(false);
    if (!at_line_start_) std::fputc('\n', out_);
    at_line_start_ = true;
    std::fflush(out_);
}

void PrefillProgress::operator()(uint64_t done, uint64_t total, double seconds) {
    if (!enabled_) return;
    const double rate = seconds > 0 ? done / seconds : 0;
    const double pct = total ? 100.0 * done / total : 100.0;
    if (tty_) {
        std::fprintf(stderr, "\r\x1b[36mprocessing %llu input tokens: %llu/%llu (%.0f%%), %.1f t/s\x1b[0m\x1b[K",
                     static_cast<unsigned long long>(total), static_cast<unsigned long long>(done),
                     static_cast<unsigned long long>(total), pct, rate);
        if (done == total) std::fputs("\r\x1b[K", stderr);
    } else {
        std::fprintf(stderr, "processing %llu input tokens: %llu/%llu (%.0f%%), %.1f t/s\n",
                     static_cast<unsigned long long>(total), static_cast<unsigned long long>(done),
                     static_cast<unsigned long long>(total), pct, rate);
    }
    std::fflush(stderr);
}

std::string speed_line(const TurnStats& s) {
    const auto rate = [](double n, double sec) { return sec > 0 ? n / sec : 0.0; };
    // The first sampled token comes from the prefill's logits: generation speed counts
    // the decode steps, one fewer than the tokens.
    const double decoded = s.generated > 0 ? static_cast<double>(s.generated - 1) : 0.0;
    char buf[128];
    std::snprintf(buf, sizeof buf, "ds4: prefill: %.2f t/s, generation: %.2f t/s",
                  rate(static_cast<double>(s.prefilled), s.prefill_seconds),
                  rate(decoded, s.generate_seconds));
    return buf;
}

std::string format_token_dump(const Tokenizer& tok, std::span<const TokenId> ids) {
    std::string out = "[";
    for (size_t i = 0; i < ids.size(); ++i) out += cat(i ? ", " : "", ids[i]);
    out += "]\n";
    char buf[32];
    for (TokenId id : ids) {
        std::snprintf(buf, sizeof buf, "%6d  ", id);
        out += buf;
        out += tok.token_text(id);
        out += '\n';
    }
    return out;
}

LogprobStep logprob_step(std::span<const float> logits, TokenId selected, size_t top_k) {
    LogprobStep step;
    step.selected = selected;
    double max = -std::numeric_limits<double>::infinity();
    for (float z : logits)
        if (std::isfinite(z)) max = std::max(max, static_cast<double>(z));
    double sum = 0;
    for (float z : logits)
        if (std::isfinite(z)) sum += std::exp(static_cast<double>(z) - max);
    const double lse = max + std::log(sum);

    std::vector<TokenId> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    const auto better = [&](TokenId a, TokenId b) {
        const float za = std::isfinite(logits[a]) ? logits[a] : -INFINITY;
        const float zb = std::isfinite(logits[b]) ? logits[b] : -INFINITY;
        return za != zb ? za > zb : a < b;
    };
    const size_t k = std::min(top_k, ids.size());
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(), better);
    for (size_t i = 0; i < k; ++i) {
        step.top.emplace_back(ids[i], logits[ids[i]]);
        step.logprobs.push_back(static_cast<double>(logits[ids[i]]) - lse);
    }
    return step;
}

std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        // Length of a valid UTF-8 sequence starting here, 0 when invalid.
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (len > 1) {
            if (i + len > s.size()) len = 0;
            for (size_t j = 1; j < len; ++j)
                if ((static_cast<unsigned char>(s[i + j]) & 0xc0) != 0x80) len = 0;
        }
        if (len == 0) {
            out += "\\ufffd";
            ++i;
        } else if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
            ++i;
        } else if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
            ++i;
        } else {
            out.append(s.substr(i, len));
            i += len;
        }
    }
    return out + "\"";
}

namespace {

std::string g9(double v) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

std::string json_token(const Tokenizer& tok, TokenId id) {
    const std::string_view bytes = tok.token_bytes(id);
    std::string out = cat("{\"id\":", id, ",\"text\":", json_string(bytes), ",\"bytes\":[");
    for (size_t i = 0; i < bytes.size(); ++i)
        out += cat(i ? "," : "", static_cast<unsigned>(static_cast<unsigned char>(bytes[i])));
    return out + "]}";
}

}  // namespace

std::string format_logprob_dump(const Tokenizer& tok, uint64_t prompt_tokens, uint64_t ctx,
                                size_t top_k, std::span<const LogprobStep> steps) {
    std::string out = cat("{\n  \"source\":\"ds4\",\n  \"prompt_tokens\":", prompt_tokens,
                          ",\n  \"ctx\":", ctx, ",\n  \"top_k\":", top_k, ",\n  \"steps\":[\n");
    for (size_t i = 0; i < steps.size(); ++i) {
        const LogprobStep& s = steps[i];
        out += cat("    {\"step\":", i, ",\"selected\":", json_token(tok, s.selected),
                   ",\"top_logprobs\":[");
        for (size_t j = 0; j < s.top.size(); ++j)
            out += cat(j ? "," : "", "{\"token\":", json_token(tok, s.top[j].first),
                       ",\"logit\":", g9(s.top[j].second), ",\"logprob\":", g9(s.logprobs[j]), "}");
        out += cat("]}", i + 1 < steps.size() ? "," : "", "\n");
    }
    return out + "  ]\n}\n";
}

Trace::Trace(const std::string& path) {
    if (path.empty()) return;
    f_ = std::fopen(path.c_str(), "w");
    if (!f_) fail(path, ": cannot open the trace file for writing");
    std::setvbuf(f_, nullptr, _IONBF, 0);
}

Trace::~Trace() {
    if (f_) std::fclose(f_);
}

void Trace::begin_turn(ThinkingMode mode, const SamplingParams& sp, uint64_t seed,
                       const std::string& rendered_prompt, uint64_t prompt_tokens) {
    if (!f_) return;
    char when[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", std::localtime(&now));
    const std::string head =
        cat("===== turn ", ++turn_, " ", when, " =====\nthink_mode: ", thinking_mode_name(mode),
            "\nprompt_tokens: ", prompt_tokens, "\ntemperature: ", g9(sp.temperature),
            "\ntop_k: ", sp.top_k, "\ntop_p: ", g9(sp.top_p), "\nmin_p: ", g9(sp.min_p),
            "\nseed: ", seed, "\n--- rendered prompt ---\n", rendered_prompt,
            "\n--- generated text ---\n");
    std::fputs(head.c_str(), f_);
}

void Trace::end_turn(const TurnStats& stats, std::string_view generated) {
    if (!f_) return;
    const std::string tail =
        cat(generated, "\n--- end ---\nfinish: ", stats.finish, "\ngenerated_tokens: ",
            stats.generated, "\nprefilled_tokens: ", stats.prefilled, "\nprefill_sec: ",
            g9(stats.prefill_seconds), "\ngenerate_sec: ", g9(stats.generate_seconds),
            "\n===== end turn ", turn_, " =====\n");
    std::fputs(tail.c_str(), f_);
}

}  // namespace ds4::cli
