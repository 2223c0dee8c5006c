#include "cli/commands.hpp"
#include "core/error.hpp"
namespace ud2m::cli {
void add_info_command(CLI::App& app) {
  app.add_subcommand("info", "(placeholder, being written)")->callback([] { fail("'info' is not written yet"); });
}
}  // namespace ud2m::cli
