// Latent models: the SD VAE's decoder against diffusers, and EDM2's latent
// convention against its reference encoder (tests/python/golden_edm2_latent.py,
// run once against github.com/NVlabs/edm2; outputs committed in tests/data/edm2).
#include <filesystem>

#include "core/error.hpp"
#include "core/image.hpp"
#include "diffusion/prior.hpp"
#include "io/safetensors.hpp"
#include "nets/adm_unet.hpp"
#include "nets/vae_decoder.hpp"
#include "test_util.hpp"

namespace ud2m {
namespace {
namespace fs = std::filesystem;

std::string data(const std::string& name) { return (test::source_dir() / "tests/data/edm2" / name).string(); }

TensorMap golden() { return read_safetensors(data("edm2_latent_tiny.golden.safetensors")).tensors; }

TEST(Vae, DecoderMatchesDiffusersUnderEitherAttentionNaming) {
  auto g = golden();
  torch::NoGradGuard no_grad;
  for (const char* folder : {"vae_tiny", "vae_tiny_old"}) {
    auto vae = nets::load_vae_decoder(data(folder));
    auto pixels = vae(g.at("raw"));
    EXPECT_EQ(pixels.sizes(), g.at("vae_out").sizes()) << folder;
    EXPECT_LT(test::max_rel_error(pixels, g.at("vae_out")), 1e-5) << folder;
  }
}

TEST(Vae, DecoderHasTheParametersOfSdVaeFtMse) {
  nets::VaeDecoderConfig c;  // the defaults are sd-vae-ft-mse's configuration
  nets::VaeDecoder vae(c);
  EXPECT_EQ(nets::count_parameters(*vae), golden().at("decoder_parameters_full").item<int64_t>());  // 49,490,199
}

TEST(Vae, LatentEdm2ModelDecodesAsItsReferenceEncoder) {
  auto prior = diffusion::load_prior(data("edm2_latent_tiny.pkl"));
  auto latent = prior->latent_space();
  ASSERT_TRUE(latent.has_value());
  EXPECT_EQ(latent->vae_name, "stabilityai/sd-vae-ft-mse");
  ASSERT_EQ(latent->scale.size(), 4u);
  EXPECT_NEAR(latent->scale[0], 0.5 / 4.17, 1e-6);  // final_std / raw_std
  EXPECT_NEAR(latent->bias[0], -5.81 * 0.5 / 4.17, 1e-6);
  EXPECT_EQ(prior->channels(), 4);
  auto g = golden();
  auto vae = nets::load_vae_decoder(data("vae_tiny"));
  // The reference writes uint8 pixels, truncating: ours agree to that step.
  auto ours = (latent->decode(vae, g.at("z")) * 255).floor();
  auto theirs = g.at("pixels_uint8").to(torch::kFloat32);
  EXPECT_LE((ours - theirs).abs().max().item<double>(), 1.0);
  EXPECT_LT((ours - theirs).abs().mean().item<double>(), 0.05);
  // A pixel model has no latent space.
  EXPECT_FALSE(diffusion::load_prior(data("edm2_tiny.pkl"))->latent_space().has_value());
}

TEST(Vae, SampleDecodesLatentModelsAndOtherCommandsRefuseThem) {
  auto dir = test::temp_dir();
  const auto model = data("edm2_latent_tiny.pkl");
  auto r = test::run_ud2m("sample --model " + model + " --vae " + data("vae_tiny") + " --steps 2 --n 2 --out-dir " +
                          (dir / "each").string() + " " + (dir / "grid.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto image = read_image((dir / "each" / "00000.png").string());
  EXPECT_EQ(image.sizes(), (std::vector<int64_t>{1, 3, 16, 16}));  // 8² latents, one 2× upsampling in the tiny VAE
  // A converted file keeps its latent space.
  const auto converted = (dir / "latent.safetensors").string();
  r = test::run_ud2m("convert " + model + " " + converted);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(diffusion::load_prior(converted)->latent_space()->to_json(),
            diffusion::load_prior(model)->latent_space()->to_json());
  // Without its VAE, or given one for a pixel model, or asked to restore: one sentence each.
  r = test::run_ud2m("sample --model " + model + " --steps 2 --n 1 " + (dir / "no_vae.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("samples latents of the VAE 'stabilityai/sd-vae-ft-mse': give that VAE's diffusers "
                          "folder with --vae DIR"),
            std::string::npos) << r.output;
  r = test::run_ud2m("sample --model " + data("edm2_tiny.pkl") + " --vae " + data("vae_tiny") + " --steps 2 --n 1 " +
                     (dir / "pixel.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--vae is for latent models"), std::string::npos) << r.output;
  r = test::run_ud2m("sample --model " + model + " --vae " + dir.string() + " --steps 2 --n 1 " +
                     (dir / "bad_vae.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("is not a diffusers AutoencoderKL folder"), std::string::npos) << r.output;
  write_png((dir / "clean.png").string(), torch::rand({1, 3, 16, 16}));
  r = test::run_ud2m("denoise --model " + model + " --sigma 0.1 " + (dir / "clean.png").string() + " " +
                     (dir / "denoised.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("is a latent model"), std::string::npos) << r.output;
  for (const char* name : {"no_vae.png", "pixel.png", "bad_vae.png", "denoised.png"})
    EXPECT_FALSE(fs::exists(dir / name)) << name;
}

}  // namespace
}  // namespace ud2m
