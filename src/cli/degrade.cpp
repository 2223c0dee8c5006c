#include "cli/commands.hpp"
#include "core/error.hpp"
namespace ud2m::cli {
void add_degrade_command(CLI::App& app) {
  app.add_subcommand("degrade", "(placeholder, being written)")->callback([] { fail("'degrade' is not written yet"); });
}
}  // namespace ud2m::cli
