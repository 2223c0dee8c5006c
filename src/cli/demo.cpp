#include "cli/commands.hpp"
#include "core/error.hpp"
namespace ud2m::cli {
void add_demo_command(CLI::App& app) {
  app.add_subcommand("demo", "(placeholder, being written)")->callback([] { fail("'demo' is not written yet"); });
}
}  // namespace ud2m::cli
