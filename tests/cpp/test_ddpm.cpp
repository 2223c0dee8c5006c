#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "diffusion/prior.hpp"
#include "io/checkpoint.hpp"
#include "io/safetensors.hpp"
#include "nets/ddpm_pesser.hpp"
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

// --- pytorch_diffusion checkpoints (pesser's ports of Ho et al.'s models) ---

namespace {
std::string pesser_ckpt(const std::string& name) {
  return (test::refs_dir("ddpm_pesser") / name / "model-1000.ckpt").string();
}

TensorMap pesser_weights(const std::string& name) { return state_dict_of(read_checkpoint(pesser_ckpt(name))); }

// The message of the Error that loading `weights` (saved as a plain file) gives.
std::string load_error(const TensorMap& weights) {
  auto path = (test::temp_dir() / "model.safetensors").string();
  write_safetensors(path, weights);
  try {
    diffusion::load_prior(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded without error)";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}
}  // namespace

TEST(DdpmPesser, CheckpointLoadsByPathAndMatchesDiffusers) {
  for (std::string name : {"lsun_like", "cifar_like"}) {  // torch.save zip and legacy formats
    auto prior = diffusion::load_prior(pesser_ckpt(name), {64, 16});
    EXPECT_EQ(prior->image_size(), 16);
    EXPECT_EQ(prior->description().value("arch", ""), "ddpm");
    auto io = read_safetensors((test::refs_dir("ddpm_pesser") / name / "io.safetensors").string()).tensors;
    torch::NoGradGuard no_grad;
    auto eps = prior->epsilon(io.at("x"), io.at("t"));
    ASSERT_EQ(eps.sizes(), io.at("out").sizes());
    const double err = test::max_rel_error(eps, io.at("out"));
    EXPECT_LE(err, 1e-5) << name;
    std::printf("%s: max rel err %.3g vs diffusers\n", name.c_str(), err);
  }
}

TEST(DdpmPesser, ConfigComesFromTheShapes) {
  auto c = nets::infer_pesser_ddpm_config(pesser_weights("lsun_like"), "lsun_like");
  EXPECT_EQ(c.block_out_channels, (std::vector<int>{32, 64, 64}));
  EXPECT_EQ(c.attention, (std::vector<bool>{false, true, false}));
  EXPECT_EQ(c.layers_per_block, 2);
  c = nets::infer_pesser_ddpm_config(pesser_weights("cifar_like"), "cifar_like");
  EXPECT_EQ(c.block_out_channels, (std::vector<int>{32, 64}));
  EXPECT_EQ(c.attention, (std::vector<bool>{true, true}));
  EXPECT_EQ(c.layers_per_block, 1);
}

TEST(DdpmPesser, NamesOfTheLsunBedroomModel) {
  // pytorch_diffusion's names for every tensor of the published LSUN configuration:
  // one to one, and the configuration comes back from them.
  const nets::DdpmConfig lsun;
  nets::DdpmUNet net(lsun);
  TensorMap theirs;
  for (auto& [ours, tensor] : nets::state_dict(*net)) {
    auto name = nets::pesser_ddpm_name(ours, 6);
    auto t = tensor;
    if (t.dim() == 2 && ours.find(".attentions.") != std::string::npos) t = t.view({t.size(0), t.size(1), 1, 1});
    EXPECT_TRUE(theirs.emplace(name, t).second) << "two tensors named " << name;
  }
  for (auto [ours, name] : std::vector<std::pair<std::string, std::string>>{
           {"time_embedding.linear_2.weight", "temb.dense.1.weight"},
           {"down_blocks.2.resnets.0.conv_shortcut.weight", "down.2.block.0.nin_shortcut.weight"},
           {"down_blocks.4.attentions.1.to_q.weight", "down.4.attn.1.q.weight"},
           {"down_blocks.0.downsamplers.0.conv.bias", "down.0.downsample.conv.bias"},
           {"mid_block.resnets.1.time_emb_proj.bias", "mid.block_2.temb_proj.bias"},
           {"mid_block.attentions.0.to_out.0.weight", "mid.attn_1.proj_out.weight"},
           {"mid_block.attentions.0.group_norm.bias", "mid.attn_1.norm.bias"},
           {"up_blocks.0.upsamplers.0.conv.weight", "up.5.upsample.conv.weight"},
           {"up_blocks.1.attentions.2.to_v.weight", "up.4.attn.2.v.weight"},
           {"up_blocks.5.resnets.2.norm1.weight", "up.0.block.2.norm1.weight"},
           {"conv_norm_out.weight", "norm_out.weight"},
           {"conv_out.bias", "conv_out.bias"}})
    EXPECT_EQ(nets::pesser_ddpm_name(ours, 6), name);
  ASSERT_TRUE(nets::has_pesser_ddpm_names(theirs));
  EXPECT_EQ(nets::infer_pesser_ddpm_config(theirs, "lsun").to_json(), lsun.to_json());
}

TEST(DdpmPesser, ConvertAndInfoRecogniseTheCheckpoint) {
  auto dir = test::temp_dir();
  auto out = (dir / "prior.safetensors").string();
  auto r = test::run_ud2m("convert " + pesser_ckpt("lsun_like") + " " + out + " --image-size 16");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto io = read_safetensors((test::refs_dir("ddpm_pesser") / "lsun_like" / "io.safetensors").string()).tensors;
  auto prior = diffusion::load_prior(out);
  EXPECT_EQ(prior->image_size(), 16);
  torch::NoGradGuard no_grad;
  EXPECT_LE(test::max_rel_error(prior->epsilon(io.at("x"), io.at("t")), io.at("out")), 1e-5);
  r = test::run_ud2m("info " + pesser_ckpt("lsun_like"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  expect_contains(r.output, "DDPM U-Net, pytorch_diffusion names: channels 32,64,64 with 2 residual blocks");
}

TEST(DdpmPesser, ShapesThatFitNoConfigGiveOneClearError) {
  const auto good = pesser_weights("lsun_like");
  auto w = good;
  w["down.1.block.1.conv2.weight"] = torch::zeros({64, 32, 3, 3});
  auto message = load_error(w);
  expect_contains(message, "fits no DDPM U-Net");
  expect_contains(message, "down.1.block.1.conv2.weight (64x32x3x3 in the file, 64x64x3x3 expected)");

  w = good;  // an up level short of a block
  for (auto it = w.begin(); it != w.end();) it = it->first.rfind("up.0.block.2.", 0) == 0 ? w.erase(it) : std::next(it);
  expect_contains(load_error(w), "up level 0 has 2 residual blocks; a DDPM U-Net with 2 per level on the way down has 3");

  w = good;  // average-pool down-sampling (resamp_with_conv=False)
  w.erase("down.0.downsample.conv.weight");
  w.erase("down.0.downsample.conv.bias");
  expect_contains(load_error(w), "has no 'down.0.downsample.conv.weight'");

  w = good;  // attention at one level only on the way up
  w.erase("up.1.attn.2.q.weight");
  expect_contains(load_error(w), "missing 1 tensors: up.1.attn.2.q.weight");

  w = good;
  w["temb.dense.0.weight"] = torch::zeros({100, 32});
  expect_contains(load_error(w), "temb.dense.0.weight is 100x32, a DDPM U-Net with 32 base channels has 128x32");

  // The CLI says it in one sentence and writes nothing.
  auto dir = test::temp_dir();
  w = good;
  w["mid.attn_1.k.weight"] = torch::zeros({64, 64, 3, 3});
  auto bad = (dir / "model-bad.ckpt").string();
  write_safetensors(bad, w);
  auto r = test::run_ud2m("convert " + bad + " " + (dir / "out.safetensors").string());
  EXPECT_NE(r.exit_code, 0);
  expect_contains(r.output, "mid.attn_1.k.weight (64x64x3x3 in the file, 64x64x1x1 expected)");
  EXPECT_FALSE(std::filesystem::exists(dir / "out.safetensors"));
}
