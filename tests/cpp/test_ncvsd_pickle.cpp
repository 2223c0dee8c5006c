// NCVSD's published generator (EDM2 U-Net + ControlNet branch) against golden
// outputs of the reference code (tests/python/golden_ncvsd.py, run once against
// github.com/xypeng9903/ncvsd; the pickle and outputs are committed in
// tests/data/ncvsd), read from a network pickle exactly as NCVSD's training loop
// writes it, without running it.
#include <filesystem>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "diffusion/prior.hpp"
#include "io/safetensors.hpp"
#include "ncvsd/networks.hpp"
#include "test_util.hpp"
#include "tiny_runs.hpp"

namespace ud2m {
namespace {
namespace fs = std::filesystem;

std::string data(const std::string& name) { return (test::source_dir() / "tests/data/ncvsd" / name).string(); }

TensorMap golden() { return read_safetensors(data("ncvsd_tiny.golden.safetensors")).tensors; }

ncvsd::Edm2GeneratorImpl& published(ncvsd::GeneratorNet& generator) {
  auto* g = dynamic_cast<ncvsd::Edm2GeneratorImpl*>(generator.get());
  if (!g) throw std::runtime_error("the NCVSD pickle did not load as the published architecture");
  return *g;
}

TEST(NcvsdPickle, ConfigAndNoiseInjectionComeFromThePickle) {
  auto generator = ncvsd::load_generator(data("ncvsd_tiny.pkl"));
  const auto& c = published(generator).net()->config();
  EXPECT_EQ(c.img_resolution, 16);
  EXPECT_EQ(c.img_channels, 3);
  EXPECT_EQ(c.label_dim, 10);
  EXPECT_EQ(c.model_channels, 16);
  EXPECT_EQ(c.channel_mult, (std::vector<int>{1, 2, 2}));
  EXPECT_EQ(c.num_blocks, 1);
  EXPECT_EQ(c.attn_resolutions, (std::vector<int>{8}));
  EXPECT_EQ(c.channels_per_head, 16);  // not in the weights: from the pickle's constructor arguments
  EXPECT_DOUBLE_EQ(generator->noise_injection(), 0.414);
  EXPECT_EQ(generator->size_multiple(), 4);
  EXPECT_TRUE(ncvsd::is_generator_file(data("ncvsd_tiny.pkl")));
  EXPECT_FALSE(ncvsd::is_generator_file((test::source_dir() / "tests/data/edm2/edm2_tiny.pkl").string()));
}

TEST(NcvsdPickle, MatchesTheReferenceNetwork) {
  auto generator = ncvsd::load_generator(data("ncvsd_tiny.pkl"));
  auto& net = published(generator).net();
  auto g = golden();
  torch::NoGradGuard no_grad;
  auto denoised = net->forward(g.at("x"), g.at("level"), g.at("y"), g.at("sigma"), g.at("class_labels"));
  EXPECT_LT(test::max_rel_error(denoised, g.at("denoised")), 1e-5);
  EXPECT_LT(test::max_rel_error(net->logvar(g.at("level")), g.at("logvar")), 1e-5);
  EXPECT_LT(test::max_rel_error(net->forward(g.at("x"), g.at("level"), g.at("y"), g.at("sigma")),
                                g.at("denoised_no_class")),
            1e-5);
  // The observation matters (through the ControlNet branch), and so does the class.
  auto other_y = net->forward(g.at("x"), g.at("level"), g.at("y").flip(3), g.at("sigma"), g.at("class_labels"));
  EXPECT_GT(test::max_rel_error(other_y, g.at("denoised")), 1e-3);
  auto other_class = net->forward(g.at("x"), g.at("level"), g.at("y"), g.at("sigma"), g.at("class_labels").roll(1, 1));
  EXPECT_GT(test::max_rel_error(other_class, g.at("denoised")), 1e-3);
  // Through the interface, with one class for every sample: the first sample's is class 2.
  auto class2 = ncvsd::load_generator(data("ncvsd_tiny.pkl"), /*class_label=*/2);
  auto first = [&](const char* name) { return g.at(name).narrow(0, 0, 1); };
  EXPECT_LT(test::max_rel_error(class2->forward(first("x"), first("level"), first("y"), first("sigma")),
                                first("denoised")),
            1e-5);
}

TEST(NcvsdPickle, GeneratorDrawsWhatTheReferenceDraws) {
  // G(y, σ, z): noise injected up to (1 + γ)σ with the reference's own draw z.
  auto generator = ncvsd::load_generator(data("ncvsd_tiny.pkl"));
  auto g = golden();
  torch::NoGradGuard no_grad;
  auto generated = ncvsd::generate(*generator, g.at("y"), g.at("sigma"), g.at("z"));
  EXPECT_LT(test::max_rel_error(generated, g.at("generated")), 1e-5);
}

TEST(NcvsdPickle, ConvertedFileNeedsNothingElseAndCommandsUseThePickle) {
  auto dir = test::temp_dir();
  const auto converted = (dir / "generator.safetensors").string();
  auto r = test::run_ud2m("convert " + data("ncvsd_tiny.pkl") + " " + converted);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto again = ncvsd::load_generator(converted);
  EXPECT_EQ(again->description().at("arch"), "edm2-controlnet");
  auto g = golden();
  {
    torch::NoGradGuard no_grad;
    EXPECT_LT(test::max_rel_error(ncvsd::generate(*again, g.at("y"), g.at("sigma"), g.at("z")), g.at("generated")),
              1e-5);
  }
  r = test::run_ud2m("sample --method ncvsd --model " + data("ncvsd_tiny.pkl") + " --steps 2 --n 2 --size 16 " +
                     (dir / "grid.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir / "grid.png"));
  // PnP-NCVSD with the published network: a 16² crop of the bundled photo, blurred.
  const auto crop = (dir / "crop.png").string();
  write_png(crop, read_image(test::bundled_photo()).narrow(2, 100, 16).narrow(3, 100, 16));
  r = test::run_ud2m("degrade --task gaussian_deblur --sigma 0.05 " + crop + " " + (dir / "y.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_ud2m("restore --method pnp-ncvsd --model " + data("ncvsd_tiny.pkl") + " --nfe 3 -m " +
                     (dir / "y.png").string() + " --out " + (dir / "x.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_image((dir / "x.png").string()).sizes(), read_image(crop).sizes());
  // A published generator gets the published task preset: σ' = √(β/2), β = 2e-3 at this σ_y = 0.05.
  const auto report = nlohmann::json::parse(read_file((dir / "x.json").string()));
  EXPECT_NEAR(report.at("settings").at("likelihood_sigma").get<double>(), std::sqrt(2e-3 / 2), 1e-9);
}

TEST(NcvsdPickle, BadInputGetsOneClearError) {
  auto dir = test::temp_dir();
  const auto edm2 = (test::source_dir() / "tests/data/edm2/edm2_tiny.pkl").string();
  EXPECT_THROW_MSG(ncvsd::load_generator(edm2), "is a pickle without an NCVSD generator in it");
  EXPECT_THROW_MSG(diffusion::load_prior(data("ncvsd_tiny.pkl")), "is an NCVSD generator, not a prior");
  EXPECT_THROW_MSG(ncvsd::load_generator(data("ncvsd_tiny.pkl"), /*class_label=*/10), "class 10 does not exist");
  auto r = test::run_ud2m("sample --method ncvsd --model " + data("ncvsd_tiny.pkl") +
                          " --steps 1 --size 16 --precision bf16 " + (dir / "g.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("bf16 inference is implemented for ADM generators; this one is 'edm2-controlnet'"),
            std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "g.png"));
  // A converted file whose weights do not fit its config: the mismatch is named.
  const auto converted = (dir / "generator.safetensors").string();
  ncvsd::save_generator(converted, *ncvsd::load_generator(data("ncvsd_tiny.pkl")), {}, torch::kFloat32);
  auto file = read_safetensors(converted);
  file.tensors.erase("dec.out_conv.weight");
  write_safetensors((dir / "missing.safetensors").string(), file.tensors, file.metadata);
  EXPECT_THROW_MSG(ncvsd::load_generator((dir / "missing.safetensors").string()), "dec.out_conv.weight");
}

}  // namespace
}  // namespace ud2m
