// `ds4 --version`: the version, the commit the binary was built from and its backends.
#pragma once

#include <string>

namespace ds4::cli {

// "ds4 0.1.0\ncommit 0123456789ab\nbackends: cpu\n" (commit "unknown" outside git).
std::string version_text();

}  // namespace ds4::cli
