// Corpus replay for ds4_server_request_fuzz where libFuzzer is not available (g++):
//   ds4_server_request_replay [--mutations N] [--seed S] FILE_OR_DIR...
// Runs LLVMFuzzerTestOneInput on every file, then on N inputs derived from them by a
// fixed-seed mutator (byte flips, inserts, deletions, JSON-token splices, cross-overs),
// so the same command always replays the same inputs. A crash or sanitizer report is the
// failure; the exit status is 0 otherwise.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void run(const std::string& input) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
}

// Fragments that steer mutations into the request grammar rather than random bytes.
const char* const kTokens[] = {
    "{", "}", "[", "]", ",", ":", "\"", "null", "true", "false", "0", "-1", "1e999", "\"\"",
    "\"role\"", "\"assistant\"", "\"tool\"", "\"content\"", "\"type\"", "\"tool_choice\"",
    "\"required\"", "\"any\"", "\"function\"", "\"name\"", "\"tools\"", "\"input\"", "\"prefix\"",
    "\"reasoning\"", "\"function_call\"", "\"custom\"", "<｜DSML｜", "</｜DSML｜tool_calls>",
    "<｜DSML｜invoke name=\"f\">", "<｜DSML｜parameter name=\"k\" string=\"false\">", "\xff", "\xe2\x82",
};

std::string mutate(std::string s, const std::vector<std::string>& corpus, std::mt19937_64& rng) {
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
        const std::size_t pos = s.empty() ? 0 : rng() % (s.size() + 1);
        switch (rng() % 6) {
            case 0:
                if (!s.empty()) s[pos % s.size()] ^= static_cast<char>(1u << (rng() % 8));
                break;
            case 1: s.insert(pos, 1, static_cast<char>(rng() % 256)); break;
            case 2:
                if (!s.empty()) s.erase(pos % s.size(), 1 + rng() % 8);
                break;
            case 3: s.insert(pos, kTokens[rng() % (sizeof kTokens / sizeof *kTokens)]); break;
            case 4: {  // duplicate a span
                if (s.empty()) break;
                const std::size_t from = rng() % s.size();
                s.insert(pos, s.substr(from, 1 + rng() % 32));
                break;
            }
            default: {  // cross-over with another corpus entry
                const std::string& other = corpus[rng() % corpus.size()];
                if (other.empty()) break;
                const std::size_t from = rng() % other.size();
                s = s.substr(0, pos) + other.substr(from);
                break;
            }
        }
    }
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    long mutations = 0;
    uint64_t seed = 1;
    std::vector<std::string> corpus;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--mutations" && i + 1 < argc) {
            mutations = std::strtol(argv[++i], nullptr, 10);
        } else if (a == "--seed" && i + 1 < argc) {
            seed = std::strtoull(argv[++i], nullptr, 10);
        } else if (std::filesystem::is_directory(a)) {
            std::vector<std::filesystem::path> files;
            for (const auto& f : std::filesystem::directory_iterator(a))
                if (f.is_regular_file()) files.push_back(f.path());
            std::sort(files.begin(), files.end());  // directory order is not deterministic
            for (const auto& f : files) corpus.push_back(read_file(f));
        } else {
            corpus.push_back(read_file(a));
        }
    }
    if (corpus.empty()) {
        std::fprintf(stderr, "ds4_server_request_replay: no input files\n");
        return 2;
    }
    for (const auto& input : corpus) run(input);
    std::mt19937_64 rng(seed);
    for (long i = 0; i < mutations; ++i) run(mutate(corpus[i % corpus.size()], corpus, rng));
    std::printf("replayed %zu inputs and %ld mutations\n", corpus.size(), mutations);
    return 0;
}
