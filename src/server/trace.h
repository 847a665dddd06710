// The session trace (`--trace FILE`): one JSON object per line, appended as things happen
// so a crashed server still leaves everything up to the crash. Records rendered prompts,
// cache decisions (live/disk hits and misses, saves with their file names, evictions),
// generated text, finish reasons and the tool calls parsed from the output.
//
// Every line has "event" and "t" (Unix seconds, fractional); request-scoped events carry
// "request" (the scheduler's serial number of the job). The file is truncated at startup
// and contains full prompts: it is sensitive data.
#pragma once

#include <cstdio>
#include <mutex>
#include <string>

#include <nlohmann/json.hpp>

namespace ds4::server {

class Trace {
public:
    // Opens (truncates) `path`. Throws ds4::Error when it cannot be created.
    explicit Trace(const std::string& path);
    ~Trace();
    Trace(const Trace&) = delete;
    Trace& operator=(const Trace&) = delete;

    // Appends {"event": event, "t": now, ...fields} as one line. Safe from any thread;
    // invalid UTF-8 in strings is replaced, never thrown on.
    void write(const std::string& event, nlohmann::ordered_json fields);

private:
    std::mutex mutex_;
    std::FILE* file_ = nullptr;
};

}  // namespace ds4::server
