// Line input for the interactive chat: libedit (emacs keys, history in ~/.ds4_history,
// 512 entries) when stdin is a terminal, plain getline otherwise.
#pragma once

#include <atomic>
#include <string>

struct editline;
struct history;

namespace ds4::cli {

class LineEditor {
public:
    enum class Status { line, eof, interrupted };

    // `history_file` empty: no history file. `interrupt` is the flag the SIGINT handler
    // sets; a read returns `interrupted` as soon as it is set, whenever the signal came.
    LineEditor(const char* program, std::string prompt, std::string history_file,
               const std::atomic<bool>& interrupt);
    ~LineEditor();
    LineEditor(const LineEditor&) = delete;
    LineEditor& operator=(const LineEditor&) = delete;

    // One line without its newline; `eof` on Ctrl+D at an empty line or end of input,
    // `interrupted` when the interrupt flag was set before or while waiting.
    Status read(std::string& line);
    // Adds a non-empty line to the history and saves the file.
    void remember(const std::string& line);

private:
    static LineEditor& self_of(editline* el);
    static char* prompt_of(editline* el);
    static int read_char(editline* el, wchar_t* out);
    Status read_plain(std::string& line);

    std::string prompt_;
    std::string history_file_;
    const std::atomic<bool>& interrupt_;
    editline* el_ = nullptr;
    history* hist_ = nullptr;
};

}  // namespace ds4::cli
