// Line input for the interactive chat: libedit (emacs keys, history in ~/.ds4_history,
// 512 entries) when stdin is a terminal, plain getline otherwise.
#pragma once

#include <string>

struct editline;
struct history;

namespace ds4::cli {

class LineEditor {
public:
    enum class Status { line, eof, interrupted };

    // `history_file` empty: no history file.
    LineEditor(const char* program, std::string prompt, std::string history_file);
    ~LineEditor();
    LineEditor(const LineEditor&) = delete;
    LineEditor& operator=(const LineEditor&) = delete;

    // One line without its newline. `interrupted` when SIGINT arrived while waiting
    // (the handler must not restart reads: install it without SA_RESTART).
    Status read(std::string& line);
    // Adds a non-empty line to the history and saves the file.
    void remember(const std::string& line);

private:
    static char* prompt_of(editline* el);

    std::string prompt_;
    std::string history_file_;
    editline* el_ = nullptr;
    history* hist_ = nullptr;
};

}  // namespace ds4::cli
