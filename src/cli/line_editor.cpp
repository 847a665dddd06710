#include "cli/line_editor.h"

#include <histedit.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>

namespace ds4::cli {

namespace {
constexpr int kHistorySize = 512;
}

LineEditor::LineEditor(const char* program, std::string prompt, std::string history_file)
    : prompt_(std::move(prompt)), history_file_(std::move(history_file)) {
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

char* LineEditor::prompt_of(editline* el) {
    void* self = nullptr;
    el_get(el, EL_CLIENTDATA, &self);
    return static_cast<LineEditor*>(self)->prompt_.data();
}

LineEditor::Status LineEditor::read(std::string& line) {
    line.clear();
    if (!el_) {
        std::cout << prompt_ << std::flush;
        errno = 0;
        if (std::getline(std::cin, line)) return Status::line;
        if (errno == EINTR) {
            std::cin.clear();
            return Status::interrupted;
        }
        return Status::eof;
    }
    int count = 0;
    errno = 0;
    const char* s = el_gets(el_, &count);
    if (!s || count < 0) {
        if (errno == EINTR) {
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
