#include "cli/commands.hpp"
#include "core/error.hpp"
namespace ud2m::cli {
void add_restore_command(CLI::App& app) {
  app.add_subcommand("restore", "(placeholder, being written)")->callback([] { fail("'restore' is not written yet"); });
}
}  // namespace ud2m::cli
