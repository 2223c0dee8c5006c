// ud2m train --method ud2m|ncvsd: distil a UD2M adapter or an NCVSD generator from a prior.
#include <cstdlib>
#include <filesystem>

#include "cli/commands.hpp"
#include "cli/measurement.hpp"
#include "cli/prior_options.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "dist/context.hpp"
#include "dist/launch.hpp"
#include "train/ncvsd_trainer.hpp"
#include "train/ud2m_trainer.hpp"

namespace ud2m::cli {

void add_train_command(CLI::App& app) {
  auto o = std::make_shared<train::Ud2mTrainOptions>();
  auto method = std::make_shared<std::string>("ud2m");
  auto lpips_weights = std::make_shared<std::vector<std::string>>();
  auto perceptual_kind = std::make_shared<std::string>("auto");
  auto ncvsd = std::make_shared<train::NcvsdTrainOptions>();
  auto* cmd = app.add_subcommand(
      "train",
      "Train a few-step restoration method on a prior. --method ud2m: LoRA + output head + λ, ρ of the unrolled\n"
      "network, adversarial + ℓ2 (+ perceptual) distillation. Resumes from OUT/checkpoint.safetensors when\n"
      "present; writes OUT/adapter.safetensors (use with restore --method ud2m --adapter) and OUT/loss.csv.\n"
      "--method ncvsd: a generative denoiser distilled from the prior (the teacher) by noise-conditional\n"
      "variational score distillation; writes OUT/generator.safetensors (use with sample --method ncvsd and\n"
      "restore --method pnp-ncvsd), OUT/samples.png and OUT/loss.csv. Options marked UD2M are ignored.");
  cmd->add_option("--method", *method, "ud2m or ncvsd")->capture_default_str();
  cmd->add_option("--prior", o->prior, "Base prior (ud2m file or original checkpoint)")->required()->check(CLI::ExistingPath);
  cmd->add_option("--data", o->data, "Folder of photographs or a list file")->required()->check(CLI::ExistingPath);
  cmd->add_option("--out", o->out_dir, "Output folder")->required();
  cmd->add_option("--task", o->task, "UD2M: Degradation task to specialise in, or 'general' (a random operator per batch)")
      ->capture_default_str();
  add_task_flags(*cmd, o->task_options);  // UD2M: the task's own settings, as `degrade` takes them
  cmd->add_option("--sigma", o->sigma, "UD2M: Measurement noise std in [0,1] units")->capture_default_str();
  cmd->add_option("--crop", o->crop, "Crop size (a multiple of 32)")->capture_default_str();
  cmd->add_option("--batch", o->batch, "Batch size")->capture_default_str();
  cmd->add_option("--steps", o->steps, "Total optimisation steps to reach")->capture_default_str();
  auto* blocks_option = cmd->add_option("--blocks", o->blocks, "UD2M: Unrolled blocks K (given with --init-adapter: "
                                       "overrides the adapter's)")->capture_default_str();
  cmd->add_option("--sample-steps", o->sample_steps, "UD2M: Sampling steps N the adapter is meant for")->capture_default_str();
  cmd->add_option("--lora-rank", o->lora.rank, "UD2M: LoRA rank")->capture_default_str();
  cmd->add_option("--lora-alpha", o->lora.alpha, "UD2M: LoRA alpha (scale alpha/rank)")->capture_default_str();
  cmd->add_option("--lora-placement", o->lora.placement,
                  "UD2M: LoRA on 'attention' (qkv/proj_out, as published) or 'attention+resblocks' (also every "
                  "residual block's 3x3 convolutions)")
      ->check(CLI::IsMember({"attention", "attention+resblocks"}))
      ->capture_default_str();
  cmd->add_option("--noise-inflation", o->noise_inflation,
                  "UD2M: factor c on σ_y in the re-noising level ρ₀ (the reference code uses 13 for inpainting)")
      ->capture_default_str();
  cmd->add_option("--learned-init", o->learned_init,
                  "UD2M: the \"w/ RAM\" variant: a small initialiser network refines x⁽⁰⁾ from (Aᵀy/Aᵀ1, x_t), "
                  "trained jointly (+1 network evaluation per sampling step; true/false)")
      ->capture_default_str();
  cmd->add_option("--init-adapter", o->init_adapter,
                  "UD2M: Start from this adapter's weights and settings (LoRA, initialiser, and K unless --blocks is "
                  "given); with --lora-placement attention+resblocks an attention-only adapter is widened (the new "
                  "LoRA starts at zero)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--lr", o->lr, "AdamW learning rate (both networks)")->capture_default_str();
  cmd->add_option("--scalar-lr", o->scalar_lr, "UD2M: learning rate of the learned λ and ρ scale")
      ->capture_default_str();
  cmd->add_option("--w-adv", o->w_adv, "UD2M: Weight of the adversarial term")->capture_default_str();
  cmd->add_option("--w-l2", o->w_l2, "UD2M: Weight of the ε ℓ2 term")->capture_default_str();
  cmd->add_option("--w-gp", o->w_gp, "UD2M: Weight of the discriminator's gradient penalty")->capture_default_str();
  cmd->add_option("--lpips-weights", *lpips_weights,
                  "Perceptual term: LPIPS trunk and heads files (as for `ud2m eval`, e.g. vgg16-397923af.pth "
                  "vgg.pth); without them the term is off")
      ->expected(2);
  cmd->add_option("--w-perceptual", o->w_perceptual, "UD2M: Weight of the perceptual term")->capture_default_str();
  cmd->add_option("--val-data", o->val_data, "UD2M: Photos for the validation PSNR (default: the training photos)")
      ->check(CLI::ExistingPath);
  cmd->add_option("--val-images", o->val_images, "UD2M: Validation crops (each with its own operator)")
      ->capture_default_str();
  cmd->add_option("--val-every", o->val_every, "UD2M: Steps between validations (0: at each checkpoint)")
      ->capture_default_str();
  cmd->add_option("--recompute", o->recompute,
                  "UD2M: recompute each prior call in the backward pass instead of keeping its activations "
                  "(memory for large priors/crops; ~1.3x slower; true/false)")
      ->capture_default_str();
  auto* bf16_option = cmd->add_option("--bf16", o->bf16, bf16_help("of the networks"));
  add_device_option(*cmd, o->device,
                    "cpu, or cuda / cuda:N: train there (random draws stay on the CPU, so a run resumes on either)");
  cmd->add_option("--seed", o->seed, "Seed of initialisation, data, operators and noise")->capture_default_str();
  cmd->add_option("--save-every", o->save_every, "Checkpoint period in steps")->capture_default_str();
  cmd->add_option("--max-time", o->max_seconds,
                  "Stop after this many seconds with a checkpoint; the same command resumes (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--profile", o->profile,
                  "Record steps 4-8 of this invocation with PyTorch's profiler into this Chrome trace "
                  "(python bench/op_times.py TRACE sums it by operator and GPU kernel)");
  cmd->add_option("--generator-lr", ncvsd->generator_lr, "NCVSD: Adam rate of the generator (--lr: the fake score's)")
      ->capture_default_str();
  cmd->add_option("--init-generator", ncvsd->init_generator,
                  "NCVSD: Start the student (and its EMA) from this generator file, e.g. an earlier run's "
                  "generator.safetensors; the fake score starts afresh")
      ->check(CLI::ExistingFile);
  cmd->add_option("--student-config", ncvsd->student_config,
                  "NCVSD: ADM preset of a freshly initialised student (needed for DDPM teachers; default: a copy "
                  "of the teacher, for EDM2 teachers as NCVSD's EDM2 + ControlNet network)");
  cmd->add_option("--ema-decay", ncvsd->ema_decay, "NCVSD: EMA decay of the generator")->capture_default_str();
  cmd->add_option("--perceptual", *perceptual_kind,
                  "UD2M: Perceptual term: lpips (needs --lpips-weights), prior (distance of the frozen prior's encoder\n"
                  "features, needs no download), none, or auto (lpips when weights are given, else prior)")
      ->check(CLI::IsMember({"auto", "lpips", "prior", "none"}))
      ->capture_default_str();
  auto nproc = std::make_shared<int>(1);
  auto* nproc_option = cmd->add_option(
      "--nproc", *nproc, "Worker processes on this machine (data parallel, Gloo over loopback; or launch "
      "one process per rank with torchrun's variables RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)");
  cmd->callback([o, method, lpips_weights, perceptual_kind, ncvsd, nproc, nproc_option, blocks_option, bf16_option] {
    UD2M_CHECK(*method == "ud2m" || *method == "ncvsd", "unknown --method '{}'; available: ud2m, ncvsd", *method);
    UD2M_CHECK(o->blocks > 0, "--blocks K must be positive, not {}", o->blocks);
    UD2M_CHECK(o->sample_steps > 0, "--sample-steps N must be positive, not {}", o->sample_steps);
    o->blocks_given = blocks_option->count() > 0;
    const bool resume = std::filesystem::exists(o->out_dir + "/checkpoint.safetensors");
    if (!resume && *nproc > 1) dist::rank_batch(o->batch, *nproc);  // fail before starting anyone
    if (dist::run_local_workers_if_requested(*nproc, nproc_option->count() > 0)) return;
    const auto device = parse_device(o->device);
    o->bf16 = resolve_bf16(*bf16_option, o->bf16, device);
    auto dist = dist::DistContext::from_environment(device);
    if (!dist->is_main()) log::threshold() = log::Level::warn;  // rank 0 speaks for the job
    if (*method == "ncvsd") {
      UD2M_CHECK(o->init_adapter.empty(), "--init-adapter starts a UD2M run; NCVSD distils from the teacher");
      UD2M_CHECK(o->task_options.empty(), "--{} sets a UD2M task; NCVSD distils without one",
                 o->task_options.begin()->first);
      ncvsd->teacher = o->prior;
      ncvsd->data = o->data;
      ncvsd->out_dir = o->out_dir;
      ncvsd->crop = o->crop;
      ncvsd->batch = o->batch;
      ncvsd->steps = o->steps;
      ncvsd->lr = o->lr;
      ncvsd->bf16 = o->bf16;
      ncvsd->seed = o->seed;
      ncvsd->save_every = o->save_every;
      ncvsd->max_seconds = o->max_seconds;
      ncvsd->profile = o->profile;
      ncvsd->device = o->device;
      train::NcvsdTrainer(*ncvsd, nullptr, dist).run();
      return;
    }
    UD2M_CHECK(ncvsd->init_generator.empty(), "--init-generator starts an NCVSD run (--method ncvsd)");
    train::PerceptualLoss perceptual;
    const bool have_lpips = !lpips_weights->empty();
    UD2M_CHECK(*perceptual_kind != "lpips" || have_lpips, "--perceptual lpips needs --lpips-weights TRUNK HEADS");
    if (*perceptual_kind == "lpips" || (*perceptual_kind == "auto" && have_lpips))
      perceptual = train::lpips_loss((*lpips_weights)[0], (*lpips_weights)[1], device);
    else if (*perceptual_kind == "prior" || *perceptual_kind == "auto")
      perceptual = train::prior_feature_loss(o->prior, device);
    train::Ud2mTrainer(*o, perceptual, nullptr, dist).run();
  });
}

}  // namespace ud2m::cli
