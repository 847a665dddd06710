// ds4-make-tokenizer: DeepSeek V3 tokenizer.json -> a GGUF with only the DeepSeek V4
// tokenizer metadata (tokenizer.ggml.* keys as in ds4 model files, no tensors), for the
// tokenizer tests, the benchmark and tokenizer-only tools.
//
//   ds4-make-tokenizer --tokenizer-json tokenizer.json -o ds4-v4-tokenizer.gguf
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>

#include "ds4/error.h"
#include "gguf/gguf.h"
#include "v4_vocab.h"

namespace {

nlohmann::json read_json(const std::string& path) {
    std::ifstream in(path);
    if (!in) ds4::fail(path, ": cannot open (run scripts/install-deps.sh for the npm packages)");
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        ds4::fail(path, ": invalid JSON: ", e.what());
    }
}

void write_gguf(const ds4::tools::V4Vocab& v, const std::string& out) {
    ds4::gguf::Writer w;
    w.add_string("general.name", "DeepSeek V4 tokenizer (DeepSeek V3 BPE + V4 special tokens)");
    w.add_string("tokenizer.ggml.model", "gpt2");
    w.add_string("tokenizer.ggml.pre", "joyai-llm");
    w.add_array_string("tokenizer.ggml.tokens", v.tokens);
    w.add_array_i32("tokenizer.ggml.token_type", v.types);
    w.add_array_string("tokenizer.ggml.merges", v.merges);
    w.add_u32("tokenizer.ggml.bos_token_id", 0);
    w.add_u32("tokenizer.ggml.eos_token_id", 1);
    w.add_u32("tokenizer.ggml.padding_token_id", 1);  // tokenizer_config.json: pad = EOS
    w.begin(out);
    w.finish();
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Writes the DeepSeek V4 tokenizer (V3 BPE + V4 specials) as GGUF metadata"};
    std::string json_path, out;
    app.add_option("--tokenizer-json", json_path, "DeepSeek V3 tokenizer.json")->required();
    app.add_option("-o,--output", out, "output GGUF")->required();
    CLI11_PARSE(app, argc, argv);
    try {
        const ds4::tools::V4Vocab v = ds4::tools::make_v4_vocab(read_json(json_path), json_path);
        write_gguf(v, out);
        std::cerr << "ds4-make-tokenizer: " << out << ": " << v.tokens.size() << " tokens, "
                  << v.merges.size() << " merges\n";
    } catch (const std::exception& e) {
        std::cerr << "ds4-make-tokenizer: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
