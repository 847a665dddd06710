// ds4-bench-text: tokenizer throughput in MB/s of input text, on the real DeepSeek V4
// vocabulary (build/ds4-v4-tokenizer.gguf; another file can be given with
// DS4_TOKENIZER_GGUF=PATH). Texts are generated deterministically (~1 MiB each):
//   english  prose with punctuation and newlines
//   code     C-like source with indentation
//   chinese  CJK prose with fullwidth punctuation
//   mixed    all of the above plus Cyrillic, Arabic, emoji and digits, with chat specials
// Cases report CPU time of one thread, so a shared machine still measures the code.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "ds4/tokenizer.h"

namespace {

const ds4::Tokenizer& tokenizer() {
    static const ds4::Tokenizer tok = [] {
        const char* env = std::getenv("DS4_TOKENIZER_GGUF");
        const std::string path = env ? env : DS4_V4_TOKENIZER_GGUF;
        try {
            return ds4::Tokenizer::load(path);
        } catch (const std::exception& e) {
            std::fprintf(stderr,
                         "ds4-bench-text: %s\n(run scripts/install-deps.sh, re-run cmake and "
                         "build the ds4-v4-tokenizer target)\n",
                         e.what());
            std::exit(1);
        }
    }();
    return tok;
}

constexpr size_t kTextBytes = 1 << 20;

std::string generate(const std::vector<std::string>& parts, uint32_t seed) {
    std::mt19937 rng(seed);
    std::string s;
    while (s.size() < kTextBytes) s += parts[rng() % parts.size()];
    return s;
}

const std::vector<std::string> kEnglish = {
    "The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog", ". ", ", ",
    "inference ", "engine ", "tokenizer ", "performance ", "isn't ", "they're ", "model ",
    "\n\n", "Hello", "! ", "What ", "about ", "2026", "? ", "(see ", "below) ", "and ", "of "};
const std::vector<std::string> kCode = {
    "int ", "main", "(", ")", " {\n", "    ", "return ", "0", ";\n", "}\n", "for (size_t i = 0; ",
    "i < n; ++i) ", "x[i] += y[i] * 3.5f;\n", "        ", "// comment\n", "#include <vector>\n",
    "std::vector<int> v{1, 2, 3};\n", "if (a && !b) ", "else ", "\t", "auto& r = m.at(\"key\");\n"};
const std::vector<std::string> kChinese = {
    "我们", "今天", "讨论", "模型", "推理", "的", "性能", "，", "。", "这是", "一个", "测试",
    "中华人民共和国", "东京", "カタカナ", "ひらがな", "“", "”", "：", "\n"};
std::vector<std::string> mixed_parts() {
    std::vector<std::string> p = kEnglish;
    p.insert(p.end(), kCode.begin(), kCode.end());
    p.insert(p.end(), kChinese.begin(), kChinese.end());
    for (const char* s : {"Привет, мир! ", "مرحبا بالعالم ", "नमस्ते ", "😀 ", "👨‍👩‍👧‍👦 ",
                          "123456789 ", "<｜User｜>", "<｜Assistant｜>", "</think>", "— ", "… "})
        p.emplace_back(s);
    return p;
}

enum class Entry { Text, Chat };

void encode(benchmark::State& state, const std::string& text, Entry entry) {
    const ds4::Tokenizer& tok = tokenizer();
    std::vector<ds4::TokenId> ids;
    ids.reserve(text.size());
    for (auto _ : state) {
        ids.clear();
        if (entry == Entry::Text) tok.encode_text(text, ids);
        else tok.encode_chat(text, ids);
        benchmark::DoNotOptimize(ids.data());
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
    state.counters["bytes/token"] = static_cast<double>(text.size()) / static_cast<double>(ids.size());
}

void BM_EncodeText_English(benchmark::State& s) {
    static const std::string t = generate(kEnglish, 1);
    encode(s, t, Entry::Text);
}
void BM_EncodeText_Code(benchmark::State& s) {
    static const std::string t = generate(kCode, 2);
    encode(s, t, Entry::Text);
}
void BM_EncodeText_Chinese(benchmark::State& s) {
    static const std::string t = generate(kChinese, 3);
    encode(s, t, Entry::Text);
}
void BM_EncodeText_Mixed(benchmark::State& s) {
    static const std::string t = generate(mixed_parts(), 4);
    encode(s, t, Entry::Text);
}
void BM_EncodeChat_Mixed(benchmark::State& s) {
    static const std::string t = generate(mixed_parts(), 4);
    encode(s, t, Entry::Chat);
}

void BM_Decode_Mixed(benchmark::State& state) {
    static const std::string t = generate(mixed_parts(), 4);
    const ds4::Tokenizer& tok = tokenizer();
    const std::vector<ds4::TokenId> ids = tok.encode_chat(t);
    for (auto _ : state) {
        std::string out = tok.decode(ids);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * t.size()));
}

BENCHMARK(BM_EncodeText_English)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeText_Code)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeText_Chinese)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeText_Mixed)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeChat_Mixed)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Decode_Mixed)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
