#include "cli/version.h"

#include "cli/options.h"
#include "ds4/error.h"
#include "ds4_build_info.h"  // generated: DS4_GIT_COMMIT

namespace ds4::cli {

namespace {

// The engine runs on the CPU; a -DDS4_CUDA=ON build also has the CUDA backend (src/cuda),
// selected with --cuda.
std::string backends() {
#ifdef DS4_CUDA_ARCHS
    return cat("cpu, cuda (sm_", DS4_CUDA_ARCHS, "; --cuda)");
#else
    return "cpu";
#endif
}

}  // namespace

std::string version_text() {
    return cat("ds4 ", kVersion, "\ncommit ", DS4_GIT_COMMIT, "\nbackends: ", backends(), "\n");
}

}  // namespace ds4::cli
