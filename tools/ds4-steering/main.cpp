// ds4-steering: writes directional steering files for --dir-steering-file (formats.md §8.1:
// raw little-endian f32 [n_layer][n_embd], no header).
//
//   ds4-steering build -m MODEL --good GOOD.txt --bad BAD.txt -o OUT.f32
//       one prompt per line in each file; each is rendered as a chat turn
//       (BOS [system] <｜User｜> prompt <｜Assistant｜> <think> or </think>) and run through
//       the model; the last token's FFN (or attention) output at every layer gives
//       direction = normalize(mean_good − mean_bad), orthogonalized against the bad mean
//       (direction_builder.h). Also writes OUT.json (the ds4 sidecar).
//   ds4-steering from-text (-m MODEL | --layers N --dim D) --input VALUES.txt -o OUT.f32
//       whitespace-separated floats: n_layer × n_embd values, or n_embd values used for
//       every layer; rows normalized unless --no-normalize.
// g++ 12 at -O2 reports a "potential null pointer dereference" inside CLI11's string
// splitting once inlined here (a false positive in the library header).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop
#include <cmath>
#include <fstream>
#include <iostream>
#include <thread>

#include "cpu/gguf_weights.h"
#include "cpu/thread_pool.h"
#include "direction_builder.h"
#include "ds4/chat.h"
#include "ds4/error.h"
#include "ds4/tokenizer.h"
#include "gguf/gguf.h"
#include "model/metadata.h"

namespace {

using namespace ds4;

std::vector<std::string> read_prompts(const std::string& path) {
    std::ifstream in(path);
    if (!in) fail(path, ": cannot open the prompt file");
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);)
        if (line.find_first_not_of(" \t\r") != std::string::npos) out.push_back(line);
    if (out.empty()) fail(path, ": no prompts (one per line)");
    return out;
}

struct BuildArgs {
    std::string model, good, bad, out, component = "ffn", system;
    bool nothink = false, pair_normalize = false, no_orthogonalize = false;
    unsigned threads = 0;
};

std::vector<std::vector<float>> activations(const BuildArgs& a, const std::string& file, const Tokenizer& tok,
                                            const cpu::CpuModel& model, cpu::ThreadPool& pool) {
    const cpu::SteeringSite site = a.component == "attn" ? cpu::SteeringSite::attn : cpu::SteeringSite::ffn;
    ChatOptions co;
    co.thinking = a.nothink ? ThinkingMode::none : ThinkingMode::high;
    std::vector<std::vector<float>> out;
    for (const std::string& prompt : read_prompts(file)) {
        std::vector<Message> msgs;
        const auto add = [&msgs](Role role, const std::string& text) {
            Message m;
            m.role = role;
            m.content = text;
            msgs.push_back(std::move(m));
        };
        if (!a.system.empty()) add(Role::system, a.system);
        add(Role::user, prompt);
        const std::vector<TokenId> ids = tok.encode_chat(encode_chat(msgs, co));
        out.push_back(steering::last_token_activations(model, ids, site, &pool));
        std::cerr << "." << std::flush;
    }
    return out;
}

int build(const BuildArgs& a) {
    const gguf::File file = gguf::File::open(a.model);
    cpu::WeightSet ws;
    cpu::add_gguf_views(ws, file);
    const cpu::CpuModel model(model::read_hparams(file), ws);
    const Tokenizer tok = Tokenizer::load(a.model);
    cpu::ThreadPool pool(a.threads != 0 ? a.threads : std::max(1u, std::thread::hardware_concurrency()));
    const auto good = activations(a, a.good, tok, model, pool);
    const auto bad = activations(a, a.bad, tok, model, pool);
    std::cerr << "\n";
    steering::DirectionOptions o;
    o.pair_normalize = a.pair_normalize;
    o.orthogonalize = !a.no_orthogonalize;
    const model::Hparams& hp = model.hparams();
    const std::vector<float> dirs = steering::build_directions(good, bad, hp.n_layer, hp.n_embd, o);
    cpu::write_steering_file(a.out, dirs);
    const std::string json_path = (a.out.ends_with(".f32") ? a.out.substr(0, a.out.size() - 4) : a.out) + ".json";
    std::ofstream(json_path) << steering::sidecar_json(hp.n_layer, hp.n_embd,
                                                       a.component == "attn" ? cpu::SteeringSite::attn
                                                                             : cpu::SteeringSite::ffn,
                                                       !a.nothink, o, a.good, a.bad, a.model);
    std::cerr << "ds4-steering: " << good.size() << " good and " << bad.size() << " bad prompts -> " << a.out << " ("
              << hp.n_layer << " x " << hp.n_embd << "), " << json_path << "\n";
    return 0;
}

struct TextArgs {
    std::string model, input, out;
    uint32_t layers = 0, dim = 0;
    bool no_normalize = false;
};

int from_text(TextArgs a) {
    if (!a.model.empty()) {
        const model::Hparams hp = model::read_hparams(gguf::File::open(a.model));
        a.layers = hp.n_layer;
        a.dim = hp.n_embd;
    }
    if (a.layers == 0 || a.dim == 0) fail("from-text: give -m MODEL or --layers N --dim D");
    std::ifstream in(a.input);
    if (!in) fail(a.input, ": cannot open");
    std::vector<float> v;
    for (std::string word; in >> word;) {
        char* end = nullptr;
        const float f = std::strtof(word.c_str(), &end);
        if (end != word.c_str() + word.size() || !std::isfinite(f))
            fail(a.input, ": value ", v.size(), " is not a finite number: ", word);
        v.push_back(f);
    }
    const uint64_t full = uint64_t{a.layers} * a.dim;
    if (v.size() == a.dim && full != a.dim) {  // one direction for every layer
        std::vector<float> all(full);
        for (uint32_t il = 0; il < a.layers; ++il) std::copy(v.begin(), v.end(), all.begin() + il * a.dim);
        v = std::move(all);
    }
    if (v.size() != full)
        fail(a.input, ": ", v.size(), " values, expected ", full, " (", a.layers, " x ", a.dim, ") or ", a.dim);
    if (!a.no_normalize) steering::normalize_rows(v, a.dim);
    cpu::write_steering_file(a.out, v);
    std::cerr << "ds4-steering: wrote " << a.out << " (" << a.layers << " x " << a.dim << ")\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"ds4-steering: build directional steering files for --dir-steering-file"};
    app.require_subcommand(1);
    BuildArgs b;
    CLI::App* bc = app.add_subcommand("build", "directions from paired prompt files (one prompt per line)");
    bc->add_option("-m,--model", b.model, "model GGUF")->required();
    bc->add_option("--good", b.good, "prompts showing the behaviour to keep")->required();
    bc->add_option("--bad", b.bad, "prompts showing the behaviour to steer away from")->required();
    bc->add_option("-o,--out", b.out, "output .f32 (a .json sidecar is written next to it)")->required();
    bc->add_option("--component", b.component, "ffn or attn (which sublayer output)")->capture_default_str();
    bc->add_option("--system", b.system, "system text of every prompt (default none)");
    bc->add_flag("--nothink", b.nothink, "render prompts in non-thinking mode (</think>)");
    bc->add_flag("--pair-normalize", b.pair_normalize, "mean of normalized good_i - bad_i differences");
    bc->add_flag("--no-orthogonalize", b.no_orthogonalize, "keep the component along the bad mean");
    bc->add_option("-t,--threads", b.threads, "threads (0: all)");
    TextArgs t;
    CLI::App* tc = app.add_subcommand("from-text", "a file from whitespace-separated float values");
    tc->add_option("-m,--model", t.model, "take layers and width from this GGUF");
    tc->add_option("--layers", t.layers, "layers (without -m)");
    tc->add_option("--dim", t.dim, "hidden width (without -m)");
    tc->add_option("--input", t.input, "values: layers x dim, or dim for every layer")->required();
    tc->add_option("-o,--out", t.out, "output .f32")->required();
    tc->add_flag("--no-normalize", t.no_normalize, "write the rows as given");
    CLI11_PARSE(app, argc, argv);
    if (b.component != "ffn" && b.component != "attn") {
        std::cerr << "ds4-steering: --component must be ffn or attn, got " << b.component << "\n";
        return 2;
    }
    try {
        return bc->parsed() ? build(b) : from_text(t);
    } catch (const std::exception& e) {
        std::cerr << "ds4-steering: " << e.what() << "\n";
        return 1;
    }
}
