// Helpers of the CLI tests: the demo model, a temporary directory, running bin/ds4 with
// captured output, and a pseudo-terminal session for the interactive mode.
#pragma once

#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace ds4::testing {

inline const std::string kDemoModel = DS4_BINARY_DIR "/ds4-demo.gguf";

inline std::string ds4_exe() {
    const char* bin = std::getenv("DS4_BIN");
    return std::string(bin ? bin : DS4_BINARY_DIR "/bin") + "/ds4";
}

class TempDir {
  public:
    TempDir() {
        std::string tmpl =
            (std::filesystem::temp_directory_path() / "ds4-cli-test-XXXXXX").string();
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
    std::string path() const { return path_.string(); }

  private:
    std::filesystem::path path_;
};

inline std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

inline void write_file(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary) << text;
}

struct CliResult {
    int status = -1;
    std::string out, err;
};

// Runs bin/ds4 with `args` (shell syntax) in `cwd`, stdout and stderr captured apart (so
// neither is a terminal: no colours, no progress unless --verbose). A run that hangs is
// killed after 300 s (status 124), well before ctest's timeout, so its output is seen.
inline CliResult run_ds4(const std::string& args, const std::string& cwd = ".") {
    TempDir tmp;
    const std::string out = tmp.file("out"), err = tmp.file("err");
    const std::string cmd = "cd '" + cwd + "' && timeout -k 10 300 '" + ds4_exe() + "' " + args + " >'" + out +
                            "' 2>'" + err + "' </dev/null";
    const int st = std::system(cmd.c_str());
    CliResult r;
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
}

// The demo model with a small context and two threads: what most tests run.
inline std::string demo_args(const std::string& more) {
    return "-m '" + kDemoModel + "' --ctx 512 -t 2 " + more;
}

// bin/ds4 on a pseudo-terminal (forkpty): stdin, stdout and stderr are the terminal, so
// the line editor, colours and SIGINT from Ctrl+C work as for a user.
//
// Every wait is bounded (kWaitLimitS each, kSessionLimitS for the whole session, both far
// below ctest's timeout) and the first wait that runs out fails the test with the output
// so far; later waits then return at once, so a hung program costs one limit, not one
// per step. The limits only guard against hangs: nothing is timed.
class PtySession {
  public:
    static constexpr int kWaitLimitS = 180;
    static constexpr int kSessionLimitS = 420;

    PtySession(const std::vector<std::string>& args, const std::string& home)
        : session_deadline_(Clock::now() + std::chrono::seconds(kSessionLimitS)) {
        pid_ = forkpty(&fd_, nullptr, nullptr, nullptr);
        if (pid_ < 0) throw std::runtime_error("forkpty failed");
        if (pid_ == 0) {
            setenv("HOME", home.c_str(), 1);
            setenv("TERM", "xterm", 1);
            std::vector<char*> argv;
            const std::string exe = ds4_exe();
            argv.push_back(const_cast<char*>(exe.c_str()));
            for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            execv(exe.c_str(), argv.data());
            _exit(127);
        }
    }
    ~PtySession() {
        if (pid_ > 0 && !exited_) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
        if (fd_ >= 0) close(fd_);
    }
    PtySession(const PtySession&) = delete;
    PtySession& operator=(const PtySession&) = delete;

    void send(const std::string& s) {
        ASSERT_EQ(write(fd_, s.data(), s.size()), static_cast<ssize_t>(s.size()));
    }

    // Reads until `text` appears after the previous match; everything read up to and
    // including it is returned ("" when it never came: the test has failed).
    std::string expect(const std::string& text, int limit_s = kWaitLimitS) {
        const auto deadline = deadline_in(limit_s);
        for (;;) {
            const size_t at = buf_.find(text, pos_);
            if (at != std::string::npos) {
                const std::string got = buf_.substr(pos_, at + text.size() - pos_);
                pos_ = at + text.size();
                return got;
            }
            if (failed_ || Clock::now() > deadline || !fill()) {
                give_up("did not see \"" + text + "\"");
                return {};
            }
        }
    }

    // Reads until at least `n` bytes arrived after the previous match (output whose text
    // is not known in advance, such as a random model's answer).
    void expect_bytes(size_t n, int limit_s = kWaitLimitS) {
        const auto deadline = deadline_in(limit_s);
        while (buf_.size() < pos_ + n) {
            if (failed_ || Clock::now() > deadline || !fill()) {
                give_up("fewer than " + std::to_string(n) + " more bytes");
                return;
            }
        }
        pos_ += n;
    }

    // Presses `key` until the program exits, at most once every 2 s, and returns its exit
    // status (-1 when it did not exit). A key whose effect depends on the moment it lands
    // (a Ctrl+C racing the prompt, a Ctrl+D typed before the terminal left cooked mode)
    // is then not a source of hangs: a user would press again too.
    int press_until_exit(const std::string& key, int limit_s = kWaitLimitS) {
        const auto deadline = deadline_in(limit_s);
        auto next_press = Clock::now();
        while (!failed_) {
            if (Clock::now() >= next_press) {
                if (write(fd_, key.data(), key.size()) < 0) break;  // the terminal is gone
                next_press = Clock::now() + std::chrono::seconds(2);
            }
            if (!fill()) return reap(deadline);
            if (Clock::now() > deadline) give_up("the program did not exit on its key");
        }
        return -1;
    }
    int interrupt_until_exit(int limit_s = kWaitLimitS) { return press_until_exit("\x03", limit_s); }
    int eof_until_exit(int limit_s = kWaitLimitS) { return press_until_exit("\x04", limit_s); }

    // Everything read so far after the last match.
    std::string unmatched() const { return buf_.substr(pos_); }

    // Waits for the program to exit (reading the terminal meanwhile) and returns its exit
    // status (-1 when killed by a signal or still running: the destructor kills it).
    int wait_exit(int limit_s = kWaitLimitS) {
        const auto deadline = deadline_in(limit_s);
        while (!failed_) {
            if (!fill()) return reap(deadline);
            if (Clock::now() > deadline) give_up("the program did not exit");
        }
        return -1;
    }
    const std::string& all() const { return buf_; }

  private:
    using Clock = std::chrono::steady_clock;

    Clock::time_point deadline_in(int limit_s) const {
        return std::min(Clock::now() + std::chrono::seconds(limit_s), session_deadline_);
    }

    void give_up(const std::string& what) {
        if (!failed_)
            ADD_FAILURE() << what << " (waits are bounded; the program hung or died); output "
                          << "so far:\n" << buf_.substr(pos_);
        failed_ = true;
    }

    // The exit status once the terminal is closed; the process is gone or about to be.
    int reap(Clock::time_point deadline) {
        for (;;) {
            int st = 0;
            const pid_t r = waitpid(pid_, &st, WNOHANG);
            if (r == pid_) {
                exited_ = true;
                return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
            }
            if (r < 0 || Clock::now() > deadline) {
                give_up("the terminal closed but the program did not exit");
                return -1;
            }
            usleep(20000);
        }
    }

    // Appends what the terminal has; false at end of output.
    bool fill() {
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, 1000) == 0) return true;
        char tmp[4096];
        const ssize_t n = read(fd_, tmp, sizeof tmp);
        if (n <= 0) return false;  // EIO once the child has closed the terminal
        buf_.append(tmp, static_cast<size_t>(n));
        return true;
    }

    Clock::time_point session_deadline_;
    pid_t pid_ = -1;
    int fd_ = -1;
    bool exited_ = false;
    bool failed_ = false;
    std::string buf_;
    size_t pos_ = 0;
};

}  // namespace ds4::testing
