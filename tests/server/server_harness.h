// Starts bin/ds4-server on the demo model at a free 127.0.0.1 port for a test suite, and
// small helpers to talk to it (JSON POST, SSE parsing).
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace ds4::testing {

using Json = nlohmann::ordered_json;

inline std::string demo_model() {
    const std::string own = DS4_BINARY_DIR "/ds4-demo.gguf";
    if (std::filesystem::exists(own)) return own;
    return DS4_SOURCE_DIR "/build/ds4-demo.gguf";
}

inline std::string server_exe() {
    const char* bin = std::getenv("DS4_BIN");
    return std::string(bin ? bin : DS4_BINARY_DIR "/bin") + "/ds4-server";
}

// A port the kernel just handed out (bound then released).
inline int free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    close(fd);
    return ntohs(addr.sin_port);
}

class ServerProcess {
public:
    explicit ServerProcess(std::vector<std::string> extra = {}) : port_(free_port()) {
        std::vector<std::string> args = {server_exe(), "--ctx", "2048", "--threads", "2", "--port", std::to_string(port_)};
        if (std::find(extra.begin(), extra.end(), "-m") == extra.end()) {
            args.push_back("-m");
            args.push_back(demo_model());
        }
        if (std::find(extra.begin(), extra.end(), "--parallel") == extra.end()) {
            args.push_back("--parallel");
            args.push_back("4");
        }
        args.insert(args.end(), extra.begin(), extra.end());
        pid_ = fork();
        if (pid_ == 0) {
            std::vector<char*> argv;
            for (auto& a : args) argv.push_back(a.data());
            argv.push_back(nullptr);
            execv(argv[0], argv.data());
            _exit(127);
        }
        // Wait for /health (model load can take a while under sanitizers).
        for (int i = 0; i < 1200; ++i) {
            httplib::Client c("127.0.0.1", port_);
            if (auto r = c.Get("/health"); r && r->status == 200) return;
            int st = 0;
            if (waitpid(pid_, &st, WNOHANG) == pid_) {
                pid_ = -1;
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        ADD_FAILURE() << "ds4-server did not come up on port " << port_;
    }
    ~ServerProcess() {
        if (pid_ > 0) stop();
    }
    // SIGTERM and the exit status (-1 if it did not exit normally).
    int stop() {
        if (pid_ <= 0) return -1;
        kill(pid_, SIGTERM);
        int st = 0;
        waitpid(pid_, &st, 0);
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
    int port() const { return port_; }
    bool running() const { return pid_ > 0; }
    httplib::Client client() const {
        httplib::Client c("127.0.0.1", port_);
        c.set_read_timeout(300, 0);
        return c;
    }

private:
    int port_;
    pid_t pid_ = -1;
};

struct HttpReply {
    int status = 0;
    std::string body;
    Json json;  // parsed body (null if not JSON)
};

inline HttpReply post(const ServerProcess& s, const std::string& path, const std::string& body,
                      const httplib::Headers& headers = {}) {
    auto c = s.client();
    auto r = c.Post(path.c_str(), headers, body, "application/json");
    HttpReply out;
    if (!r) return out;
    out.status = r->status;
    out.body = r->body;
    out.json = Json::parse(r->body, nullptr, false);
    if (out.json.is_discarded()) out.json = nullptr;
    return out;
}

inline HttpReply post(const ServerProcess& s, const std::string& path, const Json& body) {
    return post(s, path, body.dump());
}

struct SseEvent {
    std::string event;  // "" when the event had no event: line
    std::string data;
    Json json;          // parsed data (null for [DONE] or non-JSON)
};

inline std::vector<SseEvent> parse_sse(const std::string& text) {
    std::vector<SseEvent> out;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t end = text.find("\n\n", pos);
        if (end == std::string::npos) end = text.size();
        const std::string block = text.substr(pos, end - pos);
        pos = end + 2;
        SseEvent ev;
        bool any = false;
        size_t lp = 0;
        while (lp < block.size()) {
            size_t le = block.find('\n', lp);
            if (le == std::string::npos) le = block.size();
            const std::string line = block.substr(lp, le - lp);
            lp = le + 1;
            if (line.rfind("event: ", 0) == 0) ev.event = line.substr(7), any = true;
            else if (line.rfind("data: ", 0) == 0) ev.data += line.substr(6), any = true;
        }
        if (!any) continue;  // comments (keep-alive)
        ev.json = Json::parse(ev.data, nullptr, false);
        if (ev.json.is_discarded()) ev.json = nullptr;
        out.push_back(std::move(ev));
    }
    return out;
}

}  // namespace ds4::testing
