#include "cli/line_editor.h"

#include <histedit.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cwchar>
#include <iostream>

namespace ds4::cli {

namespace {

constexpr int kHistorySize = 512;
// How long the reader waits for a key before looking at the interrupt flag again. A
// SIGINT that lands before the reader blocks (while the prompt is drawn) does not wake a
// blocking read(); polling bounds how late it is noticed.
constexpr int kPollMs = 50;

}  // namespace

LineEditor::LineEditor(const char* program, std::string prompt, std::string history_file,
                       const std::atomic<bool>& interrupt)
    : prompt_(std::move(prompt)), history_file_(std::move(history_file)), interrupt_(interrupt) {
    if (!isatty(STDIN_FILENO)) return;
    el_ = el_init(program, stdin, stdout, stderr);
    if (!el_) return;
    hist_ = history_init();
    HistEvent ev;
    history(hist_, &ev, H_SETSIZE, kHistorySize);
    history(hist_, &ev, H_SETUNIQUE, 1);
    if (!history_file_.empty()) history(hist_, &ev, H_LOAD, history_file_.c_str());
    el_set(el_, EL_CLIENTDATA, this);
    el_set(el_, EL_PROMPT, &LineEditor::prompt_of);
    el_set(el_, EL_GETCFN, &LineEditor::read_char);
    el_set(el_, EL_EDITOR, "emacs");
    el_set(el_, EL_HIST, history, hist_);
    // Our SIGINT handler sees Ctrl+C; libedit only restores the terminal around it.
    el_set(el_, EL_SIGNAL, 1);
    el_source(el_, nullptr);  // ~/.editrc, like other libedit programs
}

LineEditor::~LineEditor() {
    if (el_) el_end(el_);
    if (hist_) history_end(hist_);
}

LineEditor& LineEditor::self_of(editline* el) {
    void* self = nullptr;
    el_get(el, EL_CLIENTDATA, &self);
    return *static_cast<LineEditor*>(self);
}

char* LineEditor::prompt_of(editline* el) { return self_of(el).prompt_.data(); }

// libedit's character reader (EL_GETCFN): one character, decoded with the locale like
// libedit's own reader; 1 for a character, 0 at end of input, -1 with errno set on an
// error. It waits with poll() and a short timeout rather than a blocking read() so that
// the interrupt flag set by a SIGINT is seen whenever the signal arrived; -1 with EINTR
// then makes el_gets return NULL with errno EINTR, as a signal during read() would.
int LineEditor::read_char(editline* el, wchar_t* out) {
    const LineEditor& self = self_of(el);
    *out = L'\0';
    std::mbstate_t state{};
    for (;;) {
        if (self.interrupt_.load()) {
            errno = EINTR;
            return -1;
        }
        pollfd p{STDIN_FILENO, POLLIN, 0};
        const int ready = poll(&p, 1, kPollMs);
        if (ready < 0 && errno != EINTR) return -1;
        if (ready <= 0) continue;
        char byte = 0;
        const ssize_t got = ::read(STDIN_FILENO, &byte, 1);
        if (got == 0) return 0;
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return -1;
        }
        wchar_t wc = L'\0';
        const size_t used = std::mbrtowc(&wc, &byte, 1, &state);
        if (used == static_cast<size_t>(-2)) continue;  // a multibyte character goes on
        if (used == static_cast<size_t>(-1)) {          // not a character here: dropped
            state = std::mbstate_t{};
            continue;
        }
        *out = wc;
        return 1;
    }
}

LineEditor::Status LineEditor::read_plain(std::string& line) {
    if (interrupt_.load()) return Status::interrupted;
    std::cout << prompt_ << std::flush;
    errno = 0;
    if (std::getline(std::cin, line)) return Status::line;
    if (errno == EINTR) {
        std::cin.clear();
        return Status::interrupted;
    }
    return Status::eof;
}

LineEditor::Status LineEditor::read(std::string& line) {
    line.clear();
    if (!el_) return read_plain(line);
    // The terminal goes to libedit's raw mode before the prompt is drawn. Left to itself,
    // libedit draws the prompt in cooked mode when input is pending (or after a signal
    // put the terminal back) and switches at its first read: a Ctrl+D typed in between
    // is taken by the cooked line discipline as end-of-file and reaches libedit as a NUL
    // byte (set-mark), so the program never exits.
    el_set(el_, EL_PREP_TERM, 1);
    int count = 0;
    errno = 0;
    const char* s = el_gets(el_, &count);
    if (!s || count < 0) {
        if (errno == EINTR || interrupt_.load()) {
            el_reset(el_);
            return Status::interrupted;
        }
        return Status::eof;
    }
    line.assign(s, static_cast<size_t>(count));
    if (!line.empty() && line.back() == '\n') line.pop_back();
    return Status::line;
}

void LineEditor::remember(const std::string& line) {
    if (!hist_ || line.empty()) return;
    HistEvent ev;
    history(hist_, &ev, H_ENTER, line.c_str());
    if (!history_file_.empty()) history(hist_, &ev, H_SAVE, history_file_.c_str());
}

}  // namespace ds4::cli
