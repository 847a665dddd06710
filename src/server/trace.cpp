#include "server/trace.h"

#include <cerrno>
#include <chrono>
#include <cstring>

#include "ds4/error.h"

namespace ds4::server {

Trace::Trace(const std::string& path) {
    file_ = std::fopen(path.c_str(), "w");
    if (!file_) fail("--trace ", path, ": cannot create: ", std::strerror(errno));
}

Trace::~Trace() {
    if (file_) std::fclose(file_);
}

void Trace::write(const std::string& event, nlohmann::ordered_json fields) {
    const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    nlohmann::ordered_json line = {{"event", event}, {"t", now}};
    if (fields.is_object())
        for (auto& [k, v] : fields.items()) line[k] = std::move(v);
    const std::string text = line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    std::lock_guard lock(mutex_);
    std::fputs(text.c_str(), file_);
    std::fputc('\n', file_);
    std::fflush(file_);  // a reader (or a crash) sees whole lines as they happen
}

}  // namespace ds4::server
