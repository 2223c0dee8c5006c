// ud2m: posterior sampling for image restoration with diffusion priors.
#include <c10/util/Exception.h>

#include <cstdio>

#include "cli/commands.hpp"
#include "core/error.hpp"
#include "core/process.hpp"

int main(int argc, char** argv) {
  ud2m::configure_process();
  CLI::App app{"ud2m: restore degraded images (blur, low resolution, missing pixels, JPEG, phase)\n"
               "by posterior sampling with diffusion-model priors."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "ud2m 0.1.0");
  ud2m::cli::add_degrade_command(app);
  ud2m::cli::add_restore_command(app);
  ud2m::cli::add_info_command(app);
  ud2m::cli::add_convert_command(app);
  ud2m::cli::add_sample_command(app);
  ud2m::cli::add_denoise_command(app);
  ud2m::cli::add_train_prior_command(app);
  ud2m::cli::add_train_command(app);
  ud2m::cli::add_eval_command(app);
  ud2m::cli::add_demo_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const ud2m::Error& e) {
    std::fprintf(stderr, "ud2m: error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "ud2m: error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ud2m: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
