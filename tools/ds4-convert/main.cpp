// ds4-convert: official DeepSeek V4 checkpoint → ds4 GGUF (see convert.h for the policy).
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>

#include "convert.h"
#include "ds4/error.h"

namespace {

constexpr const char* kUsage =
    "usage: ds4-convert INPUT -o OUTPUT.gguf [--type f32|f16|q8_0|q2|q4] [--imatrix FILE.dat]\n"
    "                   [--mtp-out MTP.gguf] [--threads N] [--name NAME] [--quiet]\n"
    "  INPUT   a checkpoint directory (config.json with official ModelArgs keys,\n"
    "          model.safetensors.index.json, shards) or one .safetensors file whose\n"
    "          __metadata__ holds model_args (the golden format)\n"
    "  --type  q2 (default) / q4: the released recipes; f16: every matrix F16; f32: all F32;\n"
    "          q8_0: matrices the releases store as Q8_0 become Q8_0, the F16 class and the\n"
    "          routed experts F16. Rows that do not fit a type's block fall back per tensor\n"
    "          (K-quant -> Q8_0 -> F16); the fallbacks are printed.\n"
    "  --mtp-out  also convert the MTP block (mtp.0.*) into this separate GGUF, same --type\n";

struct Args {
    std::string input, output;
    ds4::convert::ConvertOptions opt;
    bool quiet = false;
};

Args parse_args(int argc, char** argv) {
    Args a;
    auto value = [&](int& i) -> std::string {
        if (i + 1 >= argc) ds4::fail("option ", argv[i], " needs a value");
        return argv[++i];
    };
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "-o" || arg == "--output")
            a.output = value(i);
        else if (arg == "--type")
            a.opt.type = ds4::convert::parse_type_policy(value(i));
        else if (arg == "--mtp-out")
            a.opt.mtp_output = value(i);
        else if (arg == "--imatrix")
            a.opt.imatrix = value(i);
        else if (arg == "--threads")
            a.opt.threads = static_cast<unsigned>(std::stoul(value(i)));
        else if (arg == "--name")
            a.opt.model_name = value(i);
        else if (arg == "-q" || arg == "--quiet")
            a.quiet = true;
        else if (arg == "-h" || arg == "--help") {
            std::fputs(kUsage, stdout);
            std::exit(0);
        } else if (arg.starts_with("-"))
            ds4::fail("unknown option ", arg);
        else if (a.input.empty())
            a.input = arg;
        else
            ds4::fail("unexpected argument ", arg);
    }
    if (a.input.empty() || a.output.empty())
        ds4::fail("INPUT and -o OUTPUT are required\n", kUsage);
    return a;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        Args a = parse_args(argc, argv);
        a.opt.progress = !a.quiet;
        a.opt.log = &std::cerr;
        const auto r = ds4::convert::convert_checkpoint(a.input, a.output, a.opt);
        std::fprintf(
            stderr,
            "wrote %s: %zu tensors, %.1f MB in %.1f s (%zu fallbacks, %zu tensors ignored)\n",
            a.output.c_str(), r.tensors, static_cast<double>(r.bytes) / 1e6, r.seconds,
            r.fallbacks.size(), r.ignored.size());
        if (r.mtp_tensors != 0)
            std::fprintf(stderr, "wrote %s: %zu MTP tensors, %.1f MB\n", a.opt.mtp_output.c_str(),
                         r.mtp_tensors, static_cast<double>(r.mtp_bytes) / 1e6);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ds4-convert: error: %s\n", e.what());
        return 1;
    }
}
