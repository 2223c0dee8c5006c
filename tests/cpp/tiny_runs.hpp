// Tiny training runs (a random 16×16 prior saved in `dir`, the bundled
// photograph as data) for the tests of the UD2M and NCVSD trainers.
#pragma once
#include <filesystem>

#include "diffusion/prior.hpp"
#include "test_util.hpp"
#include "train/ncvsd_trainer.hpp"
#include "train/ud2m_trainer.hpp"

namespace ud2m::test {

inline std::string save_tiny_prior(const std::filesystem::path& path) {
  torch::manual_seed(0);
  diffusion::AdmPrior prior(nets::AdmConfig::preset("tiny-16"), diffusion::Schedule::linear());
  diffusion::save_prior(path.string(), prior);
  return path.string();
}

inline std::string bundled_photo() { return (source_dir() / "assets" / "astronaut_256.png").string(); }

inline train::Ud2mTrainOptions tiny_ud2m_run(const std::filesystem::path& dir) {
  train::Ud2mTrainOptions o;
  o.prior = save_tiny_prior(dir / "prior.safetensors");
  o.data = bundled_photo();
  o.out_dir = (dir / "run").string();
  o.crop = 32;
  o.batch = 2;
  o.blocks = 2;
  o.sigma = 0.05;
  return o;
}

inline train::NcvsdTrainOptions tiny_ncvsd_run(const std::filesystem::path& dir) {
  train::NcvsdTrainOptions o;
  o.teacher = save_tiny_prior(dir / "teacher.safetensors");
  o.data = bundled_photo();
  o.out_dir = (dir / "run").string();
  o.crop = 16;
  o.batch = 2;
  o.bf16 = false;
  return o;
}

}  // namespace ud2m::test
