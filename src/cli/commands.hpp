// Each subcommand lives in its own file and adds itself to the app here.
#pragma once
#include <CLI/CLI.hpp>

namespace ud2m::cli {

void add_info_command(CLI::App& app);
void add_degrade_command(CLI::App& app);
void add_restore_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_sample_command(CLI::App& app);
void add_denoise_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_train_prior_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);

}  // namespace ud2m::cli
