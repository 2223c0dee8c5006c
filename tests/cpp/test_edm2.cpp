// EDM2 networks: the C++ port against golden outputs of the reference code
// (tests/python/golden_edm2.py, run once against github.com/NVlabs/edm2; the
// pickle and outputs are committed in tests/data/edm2), read from a network
// pickle exactly as EDM2's training loop writes it, without running it.
#include <fstream>

#include "core/error.hpp"
#include "diffusion/prior.hpp"
#include "io/checkpoint.hpp"
#include "nets/edm2_unet.hpp"
#include "test_util.hpp"

namespace ud2m {
namespace {

std::string data(const std::string& name) { return (test::source_dir() / "tests/data/edm2" / name).string(); }

TensorMap golden() { return read_safetensors(data("edm2_tiny.golden.safetensors")).tensors; }

std::shared_ptr<diffusion::Edm2Prior> load_tiny(int class_label = -1) {
  diffusion::LoadOptions options;
  options.class_label = class_label;
  auto prior = std::dynamic_pointer_cast<diffusion::Edm2Prior>(diffusion::load_prior(data("edm2_tiny.pkl"), options));
  if (!prior) throw std::runtime_error("the EDM2 pickle did not load as an Edm2Prior");
  return prior;
}

TEST(Edm2, NetworkPickleIsRefusedUnlessItsObjectsAreKeptInert) {
  EXPECT_EQ(detect_checkpoint_file_format(data("edm2_tiny.pkl")), CheckpointFormat::Pickle);
  EXPECT_THROW_MSG(read_checkpoint(data("edm2_tiny.pkl")), "refusing to load");
  CheckpointOptions opaque;
  opaque.opaque_records = true;
  auto weights = nets::edm2_state_dict(read_checkpoint(data("edm2_tiny.pkl"), opaque));
  ASSERT_TRUE(weights.count("unet.enc.16x16_conv.weight"));
  EXPECT_EQ(weights.at("unet.enc.16x16_conv.weight").sizes(), (std::vector<int64_t>{16, 4, 3, 3}));
  EXPECT_EQ(weights.at("unet.enc.16x16_conv.weight").scalar_type(), torch::kFloat16);  // snapshots are fp16
  EXPECT_TRUE(weights.count("logvar_linear.weight"));
}

TEST(Edm2, ConfigIsRecoveredFromTheWeightsAndStoredArguments) {
  auto c = load_tiny()->net()->config();
  EXPECT_EQ(c.img_resolution, 16);
  EXPECT_EQ(c.img_channels, 3);
  EXPECT_EQ(c.label_dim, 10);
  EXPECT_EQ(c.model_channels, 16);
  EXPECT_EQ(c.channel_mult, (std::vector<int>{1, 2, 2}));
  EXPECT_EQ(c.num_blocks, 1);
  EXPECT_EQ(c.attn_resolutions, (std::vector<int>{8}));
  EXPECT_EQ(c.channels_per_head, 16);  // not in the weights: from the pickle's constructor arguments
  EXPECT_EQ(c.logvar_channels, 128);
}

TEST(Edm2, MatchesTheReferenceNetwork) {
  auto prior = load_tiny();
  auto g = golden();
  torch::NoGradGuard no_grad;
  auto& net = prior->net();
  auto denoised = net->forward(g.at("x"), g.at("sigma"), g.at("class_labels"));
  EXPECT_LT(test::max_rel_error(denoised, g.at("denoised")), 1e-5);
  EXPECT_LT(test::max_rel_error(net->logvar(g.at("sigma")), g.at("logvar")), 1e-5);
  EXPECT_LT(test::max_rel_error(net->forward(g.at("x"), g.at("sigma")), g.at("denoised_no_class")), 1e-5);
  // The network matters: a different class gives a different output.
  auto other = net->forward(g.at("x"), g.at("sigma"), g.at("class_labels").roll(1, 1));
  EXPECT_GT(test::max_rel_error(other, g.at("denoised")), 1e-3);
}

TEST(Edm2, PriorIsTheNetworkSeenThroughTheDiscreteSchedule) {
  auto prior = load_tiny(/*class_label=*/3);
  auto g = golden();
  torch::NoGradGuard no_grad;
  auto x0 = g.at("x").clamp(-1, 1);
  for (int t : {5, 300, 900}) {
    const double ab = prior->schedule().alpha_bar(t), sigma = prior->schedule().sigma(t);
    auto noise = torch::randn_like(x0);
    auto x_t = std::sqrt(ab) * x0 + std::sqrt(1 - ab) * noise;
    auto labels = torch::one_hot(torch::full({3}, 3, torch::kLong), 10).to(torch::kFloat32);
    auto expected = prior->net()->forward(x_t / std::sqrt(ab), torch::full({3}, sigma), labels);
    EXPECT_LT(test::max_rel_error(prior->x0(x_t, t), expected), 1e-4) << "t = " << t;
  }
  // Fractional timesteps interpolate σ in log space between the integers.
  auto s = prior->schedule().sigmas_at(torch::tensor({10.0, 10.5, 11.0}));
  EXPECT_NEAR(s[1].item<double>(), std::sqrt(s[0].item<double>() * s[2].item<double>()), 1e-9);
  EXPECT_NEAR(s[0].item<double>(), prior->schedule().sigma(10), 1e-12);
}

TEST(Edm2, EachRowCanHaveItsOwnClass) {
  // How `sample` shows a class-conditional model no class: one drawn per image.
  auto prior = load_tiny();
  auto x = golden().at("x").clamp(-1, 1);
  const std::vector<int64_t> classes = {2, 0, 7};
  prior->classes().per_row = classes;
  torch::NoGradGuard no_grad;
  auto mixed = prior->x0(x, 300);
  for (int64_t row = 0; row < 3; ++row) {
    auto single = load_tiny(static_cast<int>(classes[row]));
    EXPECT_LT(test::max_rel_error(mixed.narrow(0, row, 1), single->x0(x.narrow(0, row, 1), 300)), 1e-5) << row;
  }
  EXPECT_GT(test::max_rel_error(mixed, load_tiny(/*class_label=*/2)->x0(x, 300)), 1e-3);
  EXPECT_THROW_MSG(prior->x0(x.narrow(0, 0, 2), 300), "classes were drawn for batches of 3 rows, not 2");
}

TEST(Edm2, ConvertedFileNeedsNothingElse) {
  auto dir = test::temp_dir();
  auto prior = load_tiny();
  diffusion::save_prior((dir / "edm2.safetensors").string(), *prior);
  auto again = std::dynamic_pointer_cast<diffusion::Edm2Prior>(diffusion::load_prior((dir / "edm2.safetensors").string()));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->net()->config().to_json(), prior->net()->config().to_json());
  auto g = golden();
  torch::NoGradGuard no_grad;
  EXPECT_LT(test::max_rel_error(again->net()->forward(g.at("x"), g.at("sigma"), g.at("class_labels")),
                                g.at("denoised")),
            1e-5);
  // The CLI samples from the pickle directly.
  auto r = test::run_ud2m("sample --model " + data("edm2_tiny.pkl") + " --steps 3 --n 2 --seed 0 " +
                          (dir / "grid.png").string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "grid.png"));
  EXPECT_NE(r.output.find("one class per sample, drawn at random"), std::string::npos) << r.output;
  r = test::run_ud2m("sample --model " + data("edm2_tiny.pkl") + " --class 12 --steps 3 --n 1 " +
                     (dir / "bad.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("class 12 does not exist: the EDM2 model has 10 classes"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "bad.png"));
}

TEST(Edm2, TrainingModeNormalisesTheStoredWeights) {
  // EDM2's forced weight normalisation: in training mode a layer first rescales
  // its stored weight to unit mean square per output channel (in eval mode it
  // leaves it alone); the output is the same either way.
  torch::manual_seed(0);
  nets::MPConv conv(4, 6, std::vector<int64_t>{3, 3});
  {
    torch::NoGradGuard no_grad;
    conv->weight.mul_(3).add_(0.1);
  }
  const auto stored = conv->weight.detach().clone();
  const auto x = torch::randn({1, 4, 8, 8});
  conv->eval();
  const auto before = conv(x).detach();
  EXPECT_TRUE(torch::equal(conv->weight, stored));
  conv->train();
  const auto during = conv(x).detach();
  const auto mean_square = conv->weight.detach().square().mean({1, 2, 3});
  EXPECT_LT((mean_square - 1).abs().max().item<double>(), 1e-3) << mean_square;
  EXPECT_LT(test::max_rel_error(during, before), 1e-3);  // up to the normalisation's ε (1e-4), applied twice

  // NCVSD's ControlNet decoder keeps its mixing weights in [0, 1] where they are stored, in training.
  nets::Edm2Config c;
  c.img_resolution = 16;
  c.model_channels = 16;
  c.channel_mult = {1, 2};
  c.num_blocks = 1;
  c.attn_resolutions = {};
  c.channels_per_head = 16;  // the innermost decoder block always attends
  nets::Edm2ControlNet net(c);
  auto params = net->named_parameters();
  {
    torch::NoGradGuard no_grad;
    params["dec.additional_x_weight"].fill_(1.5);
    params["dec.additional_skips_weight"].fill_(-0.5);
  }
  const auto y = torch::randn({1, 3, 16, 16});
  const auto level = torch::full({1}, 0.5);
  net->eval();
  net->forward(y, level, y, level);
  EXPECT_EQ(params["dec.additional_x_weight"].item<double>(), 1.5);
  net->train();
  net->forward(y, level, y, level);
  EXPECT_EQ(params["dec.additional_x_weight"].item<double>(), 1);
  EXPECT_EQ(params["dec.additional_skips_weight"].max().item<double>(), 0);
}

TEST(Edm2, BadInputGetsOneClearError) {
  auto dir = test::temp_dir();
  {  // pickle.dumps({'a': 1}, protocol=4): a pickle, but no network in it
    std::ofstream f(dir / "plain.pkl", std::ios::binary);
    const unsigned char bytes[] = {0x80, 0x04, 0x95, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0x7d, 0x94,
                                   0x8c, 0x01, 0x61, 0x94, 0x4b, 0x01, 0x73, 0x2e};
    f.write(reinterpret_cast<const char*>(bytes), sizeof bytes);
  }
  EXPECT_THROW_MSG(diffusion::load_prior((dir / "plain.pkl").string()), "without an EDM2 network");
  EXPECT_THROW_MSG(load_tiny(/*class_label=*/10), "class 10 does not exist");
  nets::LoraOptions lora;
  EXPECT_THROW_MSG(load_tiny()->add_lora(lora), "not supported");
}

}  // namespace
}  // namespace ud2m
