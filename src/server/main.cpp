#include <cstdio>

#include "server/app.h"

int main(int argc, char** argv) {
    ds4::server::ServerOptions options;
    if (const int code = ds4::server::parse_options(argc, argv, options); code >= 0) return code;
    try {
        return ds4::server::run_server(options);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ds4-server: %s\n", e.what());
        return 1;
    }
}
