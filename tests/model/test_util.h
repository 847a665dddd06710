// Helpers shared by the model tests: a self-deleting temporary directory, running a
// built tool and capturing its output, and writing metadata-only GGUF files.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "gguf/gguf.h"

namespace ds4::model::testing {

class TempDir {
  public:
    TempDir() {
        std::string tmpl =
            (std::filesystem::temp_directory_path() / "ds4-model-test-XXXXXX").string();
        if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    std::string file(const std::string& name) const { return (path_ / name).string(); }

  private:
    std::filesystem::path path_;
};

// Where the built tools are: $DS4_BIN (set by ctest), else the build tree's bin/.
inline std::string tool_path(const std::string& name) {
    const char* bin = std::getenv("DS4_BIN");
    return std::string(bin ? bin : DS4_BINARY_DIR "/bin") + "/" + name;
}

struct CommandResult {
    int status = -1;     // exit status
    std::string output;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& cmd) {
    CommandResult r;
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return r;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.output.append(buf, n);
    const int st = pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

// A GGUF with the metadata `add` declares and no tensors.
inline void write_metadata_file(const std::string& path,
                                const std::function<void(gguf::Writer&)>& add) {
    gguf::Writer w;
    add(w);
    w.begin(path);
    w.finish();
}

}  // namespace ds4::model::testing
