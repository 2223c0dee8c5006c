#include "core/atomic_file.hpp"
#include "diffusion/prior.hpp"
#include "io/safetensors.hpp"
#include "nets/ddpm_unet.hpp"
#include "nets/state_dict.hpp"
#include "test_util.hpp"

using namespace ud2m;

namespace {
void expect_matches_diffusers(const std::string& name) {
  auto folder = test::refs_dir("ddpm") / name;
  auto config = nets::DdpmConfig::from_diffusers(nlohmann::json::parse(read_file((folder / "config.json").string())));
  nets::DdpmUNet net(config);
  nets::load_state_dict(*net, read_safetensors((folder / "diffusion_pytorch_model.safetensors").string()).tensors, name);
  net->eval();
  auto io = read_safetensors((folder / "io.safetensors").string()).tensors;
  torch::NoGradGuard no_grad;
  auto out = net->forward(io.at("x"), io.at("t"));
  ASSERT_EQ(out.sizes(), io.at("out").sizes());
  EXPECT_LE(test::max_rel_error(out, io.at("out")), 1e-5) << name;
}
}  // namespace

TEST(DdpmUNet, MatchesDiffusersWithHoConventions) { expect_matches_diffusers("ho"); }

TEST(DdpmUNet, MatchesDiffusersWithHeadsAndDefaults) { expect_matches_diffusers("heads"); }

TEST(DdpmUNet, LsunBedroomConfigHasThePublishedParameterCount) {
  nets::DdpmUNet net(nets::DdpmConfig{});  // defaults are google/ddpm-bedroom-256
  int64_t n = 0;
  for (auto& p : net->parameters()) n += p.numel();
  EXPECT_EQ(n, 113673219);
}

TEST(DdpmUNet, DiffusersFolderLoadsAsAPriorAndRoundTripsThroughAPriorFile) {
  auto folder = test::refs_dir("ddpm") / "ho";
  auto prior = diffusion::load_prior(folder.string());
  EXPECT_EQ(prior->image_size(), 16);
  auto io = read_safetensors((folder / "io.safetensors").string()).tensors;
  torch::NoGradGuard no_grad;
  auto eps = prior->epsilon(io.at("x"), io.at("t"));
  EXPECT_LE(test::max_rel_error(eps, io.at("out")), 1e-5);
  auto dir = test::temp_dir();
  diffusion::save_prior((dir / "p.safetensors").string(), *prior);
  auto again = diffusion::load_prior((dir / "p.safetensors").string());
  EXPECT_TRUE(torch::equal(again->epsilon(io.at("x"), io.at("t")), eps));
}
