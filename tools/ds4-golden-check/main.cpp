// ds4-golden-check FILE.safetensors [--type f32|f16|q8_0|q2|q4] [--threads N] [--keep DIR]
//                  [--fast] [--no-mtp]
// Converts the checkpoint inside a golden file to a temporary GGUF, runs it on the CPU
// forward pass and compares with the file's reference logits (see golden_check.h).
// Exit status 0 when every bound holds, 1 when one is violated, 2 on errors.
#include <cstdio>
#include <string>
#include <string_view>

#include "ds4/error.h"
#include "golden_check.h"

int main(int argc, char** argv) {
    try {
        std::string path;
        ds4::golden::CheckOptions opt;
        for (int i = 1; i < argc; ++i) {
            const std::string_view arg = argv[i];
            auto value = [&]() -> std::string {
                if (i + 1 >= argc) ds4::fail("option ", arg, " needs a value");
                return argv[++i];
            };
            if (arg == "--type")
                opt.type = ds4::convert::parse_type_policy(value());
            else if (arg == "--threads")
                opt.threads = static_cast<unsigned>(std::stoul(value()));
            else if (arg == "--fast")
                opt.fast_numerics = true;
            else if (arg == "--no-mtp")
                opt.mtp = false;
            else if (arg == "--keep") {
                opt.work_dir = value();
                opt.keep_gguf = true;
            } else if (arg == "-h" || arg == "--help") {
                std::puts(
                    "usage: ds4-golden-check FILE.safetensors [--type f32|f16|q8_0|q2|q4] "
                    "[--threads N] "
                    "[--keep DIR] [--fast] [--no-mtp]\n"
                    "  --fast    run with the engine's fast CPU numerics (default: exact decode)\n"
                    "  --no-mtp  skip the MTP block check (mode d; run when the file has the "
                    "block)");
                return 0;
            } else if (arg.starts_with("-"))
                ds4::fail("unknown option ", arg);
            else
                path = arg;
        }
        if (path.empty())
            ds4::fail("usage: ds4-golden-check FILE.safetensors [--type T] [--threads N]");
        const auto r = ds4::golden::run_golden_check(path, opt);
        std::printf("%s as %s: %zu tensors, %.2f MB, %zu fallbacks\n", path.c_str(),
                    std::string(ds4::convert::type_policy_name(opt.type)).c_str(),
                    r.conversion.tensors, static_cast<double>(r.conversion.bytes) / 1e6,
                    r.conversion.fallbacks.size());
        for (const std::string& fb : r.conversion.fallbacks)
            std::printf("  fallback %s\n", fb.c_str());
        for (const std::string& f : r.failures) std::printf("FAIL %s\n", f.c_str());
        for (const auto& s : r.modes)
            std::printf(
                "%s\n",
                ds4::golden::format_stats(s, ds4::golden::bounds_for(opt.type, s.mode)).c_str());
        std::printf("%s\n", r.passed() ? "PASS" : "FAIL");
        return r.passed() ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ds4-golden-check: error: %s\n", e.what());
        return 2;
    }
}
