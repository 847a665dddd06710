// --dir-steering-file / --dir-steering-ffn / --dir-steering-attn in the ds4 CLI and
// ds4-server (interface.md §5.2, §6.1, §7.5): parsed into DirectionalSteering with unset
// scales left unset (the engine applies the defaults), range [-100, 100], and a non-zero
// scale without a file is a usage error (exit status 2).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cli/options.h"
#include "server/app.h"

namespace ds4 {
namespace {

cli::Options cli_parse(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    return cli::parse_options(argv);
}

// (exit code from server::parse_options, options)
std::pair<int, server::ServerOptions> server_parse(std::vector<std::string> args) {
    std::string name = "ds4-server";
    std::vector<char*> argv{name.data()};
    for (std::string& a : args) argv.push_back(a.data());
    server::ServerOptions o;
    const int rc = server::parse_options(static_cast<int>(argv.size()), argv.data(), o);
    return {rc, o};
}

TEST(SteeringFlags, CliPassesFileAndScales) {
    const cli::Options none = cli_parse({});
    EXPECT_TRUE(none.steering.file.empty());
    EXPECT_FALSE(none.steering.ffn);
    EXPECT_FALSE(none.steering.attn);
    const cli::Options file_only = cli_parse({"--dir-steering-file", "d.f32"});
    EXPECT_EQ(file_only.steering.file, "d.f32");
    EXPECT_FALSE(file_only.steering.ffn);  // the engine makes it 1
    const cli::Options both =
        cli_parse({"--dir-steering-file", "d.f32", "--dir-steering-ffn", "-0.75", "--dir-steering-attn", "2.5"});
    EXPECT_EQ(both.steering.ffn, -0.75f);
    EXPECT_EQ(both.steering.attn, 2.5f);
}

TEST(SteeringFlags, CliRejectsBadScales) {
    EXPECT_THROW(cli_parse({"--dir-steering-file", "d.f32", "--dir-steering-ffn", "101"}), cli::UsageError);
    EXPECT_THROW(cli_parse({"--dir-steering-file", "d.f32", "--dir-steering-attn", "x"}), cli::UsageError);
    EXPECT_THROW(cli_parse({"--dir-steering-ffn", "1"}), cli::UsageError);  // no file
    EXPECT_THROW(cli_parse({"--dir-steering-file"}), cli::UsageError);      // no value
    EXPECT_NO_THROW(cli_parse({"--dir-steering-ffn", "0"}));                // zero needs no file
}

TEST(SteeringFlags, CliHelpDocumentsThem) {
    const std::string_view help = cli::help_text();
    EXPECT_NE(help.find("--dir-steering-file"), std::string_view::npos);
    EXPECT_NE(help.find("--dir-steering-ffn"), std::string_view::npos);
    EXPECT_NE(help.find("--dir-steering-attn"), std::string_view::npos);
}

TEST(SteeringFlags, ServerPassesFileAndScales) {
    const auto [rc0, none] = server_parse({});
    EXPECT_EQ(rc0, -1);
    EXPECT_FALSE(none.steering.ffn);
    EXPECT_FALSE(none.steering.attn);
    const auto [rc1, both] =
        server_parse({"--dir-steering-file", "d.f32", "--dir-steering-ffn", "-3", "--dir-steering-attn", "0.5"});
    EXPECT_EQ(rc1, -1);
    EXPECT_EQ(both.steering.file, "d.f32");
    EXPECT_EQ(both.steering.ffn, -3.0f);
    EXPECT_EQ(both.steering.attn, 0.5f);
    const auto [rc2, file_only] = server_parse({"--dir-steering-file", "d.f32"});
    EXPECT_EQ(rc2, -1);
    EXPECT_FALSE(file_only.steering.ffn);
}

TEST(SteeringFlags, ServerRejectsBadScales) {
    EXPECT_EQ(server_parse({"--dir-steering-file", "d.f32", "--dir-steering-ffn", "150"}).first, 2);
    EXPECT_EQ(server_parse({"--dir-steering-attn", "1"}).first, 2);  // no file
}

}  // namespace
}  // namespace ds4
