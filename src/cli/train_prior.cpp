// ud2m train-prior: train a diffusion prior on a folder or list of photographs.
#include <cstdlib>
#include <filesystem>

#include "cli/commands.hpp"
#include "cli/prior_options.hpp"
#include "core/device.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "dist/context.hpp"
#include "dist/launch.hpp"
#include "train/prior_trainer.hpp"

namespace ud2m::cli {

void add_train_prior_command(CLI::App& app) {
  auto o = std::make_shared<train::PriorTrainOptions>();
  auto* cmd = app.add_subcommand(
      "train-prior",
      "Train a diffusion prior (ε-prediction, AdamW, EMA) on random crops of photographs. Resumes from\n"
      "OUT/checkpoint.safetensors when present; writes OUT/prior.safetensors (EMA weights, bf16),\n"
      "OUT/loss.csv and OUT/samples.png. Data parallel over processes: --nproc N on this machine, or\n"
      "under a launcher that sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (torchrun).");
  cmd->add_option("--data", o->data, "Folder of PNG/JPEG photos, or a text file listing one path per line")
      ->check(CLI::ExistingPath);
  cmd->add_option("--out", o->out_dir, "Output folder")->required();
  cmd->add_option("--config", o->config, "ADM preset: ud2m-small-64, tiny-16, adm-ffhq-256, adm-256-uncond")
      ->capture_default_str();
  cmd->add_option("--crop", o->crop, "Crop size in pixels")->capture_default_str();
  cmd->add_option("--batch", o->batch, "Batch size (global: split evenly over the processes)")->capture_default_str();
  cmd->add_option("--steps", o->steps, "Total optimisation steps to reach")->capture_default_str();
  cmd->add_option("--lr", o->lr, "AdamW learning rate")->capture_default_str();
  cmd->add_option("--weight-decay", o->weight_decay, "AdamW weight decay")->capture_default_str();
  cmd->add_option("--ema", o->ema_decay, "EMA decay")->capture_default_str();
  auto* bf16_option = cmd->add_option("--bf16", o->bf16, bf16_help(""));
  cmd->add_option("--device", o->device, "cpu, cuda or cuda:N (a resumed run may change device)")
      ->capture_default_str();
  cmd->add_option("--init", o->init, "Start a new run from this prior's weights (same --config)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--max-time", o->max_seconds,
                  "Stop after this many seconds with a checkpoint and sample grid (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--profile", o->profile,
                  "Record steps 4-8 of this invocation with PyTorch's profiler into this Chrome trace "
                  "(python bench/op_times.py TRACE sums it by operator and GPU kernel)");
  cmd->add_option("--seed", o->seed, "Seed of initialisation, data order and noise")->capture_default_str();
  cmd->add_option("--save-every", o->save_every, "Checkpoint period in steps")->capture_default_str();
  cmd->add_option("--sample-every", o->sample_every, "Sample-grid period in steps (0: never)")->capture_default_str();
  auto nproc = std::make_shared<int>(1);
  auto* nproc_option = cmd->add_option(
      "--nproc", *nproc, "Worker processes on this machine (data parallel, Gloo over loopback)");
  cmd->callback([o, nproc, nproc_option, bf16_option] {
    const bool resume = std::filesystem::exists(o->out_dir + "/checkpoint.safetensors");
    UD2M_CHECK(!o->data.empty() || resume, "--data is required unless --out holds a checkpoint to resume");
    if (!resume && *nproc > 1) dist::rank_batch(o->batch, *nproc);  // fail before starting anyone
    if (dist::run_local_workers_if_requested(*nproc, nproc_option->count() > 0)) return;
    const auto device = parse_device(o->device);
    o->bf16 = resolve_bf16(*bf16_option, o->bf16, device);
    auto dist = dist::DistContext::from_environment(device);
    if (!dist->is_main()) log::threshold() = log::Level::warn;  // rank 0 speaks for the job
    train::PriorTrainer(*o, nullptr, dist).run();
  });
}

}  // namespace ud2m::cli
