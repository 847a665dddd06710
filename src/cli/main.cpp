// ds4: the command-line front end (interface.md §5). One-shot generation and dumps live
// in app.cpp, the interactive chat in repl.cpp.
#include <cstdio>
#include <iostream>
#include <span>

#include "cli/app.h"
#include "cli/model_info.h"
#include "cli/options.h"
#include "cli/version.h"

int main(int argc, char** argv) {
    using namespace ds4::cli;
    try {
        const Options o = parse_options(std::span<char* const>(argv + 1, static_cast<size_t>(argc - 1)));
        if (o.help) {
            std::cout << help_text();
            return 0;
        }
        if (o.version) {
            std::cout << version_text();
            return 0;
        }
        if (o.model_info) return run_model_info(o);
        return o.one_shot() ? run_one_shot(o) : run_interactive(o);
    } catch (const UsageError& e) {
        std::cerr << "ds4: " << e.message << "\nusage: ds4 [options] [-p TEXT] (see ds4 --help)\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "ds4: " << e.what() << "\n";
        return 1;
    }
}
