#include <filesystem>

#include "core/error.hpp"
#include "diffusion/prior.hpp"
#include "io/safetensors.hpp"
#include "nets/adm_infer.hpp"
#include "nets/adm_unet.hpp"
#include "nets/fp32_group_norm.hpp"
#include "nets/state_dict.hpp"
#include "test_util.hpp"

using namespace ud2m;

namespace {

struct Reference {
  nets::AdmConfig config;
  TensorMap weights, inputs;
};

Reference load_reference(const std::string& name) {
  auto file = read_safetensors((test::refs_dir("adm") / (name + ".safetensors")).string());
  Reference ref;
  ref.config = nets::AdmConfig::from_json(nlohmann::json::parse(file.metadata.at("config")));
  for (auto& [key, tensor] : file.tensors) {
    if (key.rfind("weights.", 0) == 0)
      ref.weights[key.substr(8)] = tensor;
    else
      ref.inputs[key] = tensor;
  }
  return ref;
}

// Also channels-last, where the attention blocks run on token rows.
void expect_matches_reference(const std::string& name) {
  auto ref = load_reference(name);
  nets::AdmUNet net(ref.config);
  nets::load_state_dict(*net, ref.weights, name);
  net->eval();
  torch::NoGradGuard no_grad;
  auto labels = ref.inputs.count("labels") ? ref.inputs.at("labels") : torch::Tensor();
  for (auto format : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
    auto out = net->forward(ref.inputs.at("x").contiguous(format), ref.inputs.at("t"), labels);
    ASSERT_EQ(out.sizes(), ref.inputs.at("out").sizes());
    EXPECT_LE(test::max_rel_error(out, ref.inputs.at("out")), 1e-5)
        << name << (format == torch::MemoryFormat::ChannelsLast ? ", channels-last" : "");
  }
}

}  // namespace

TEST(AdmUNet, MatchesDeepinvWithScaleShiftUpDownLegacyAttention) { expect_matches_reference("updown_legacy"); }

TEST(AdmUNet, MatchesDeepinvWithConvResampleNewAttentionClasses) { expect_matches_reference("conv_new_classes"); }

// Channels-last attention blocks run on token rows (linear projections,
// strided head views): with LoRA on them and both head layouts, the outputs
// and the LoRA factors' gradients are those of the NCHW path.
TEST(AdmUNet, TokenRowAttentionGivesTheNchwOutputsAndGradients) {
  for (bool new_order : {false, true}) {
    SCOPED_TRACE(new_order ? "new attention order" : "legacy attention order");
    auto config = nets::AdmConfig::preset("tiny-16");
    config.use_new_attention_order = new_order;
    torch::manual_seed(5);
    nets::AdmUNet net(config);
    nets::LoraOptions lora;
    lora.rank = 2;
    net->add_lora(lora);
    std::vector<torch::Tensor> factors;
    for (auto& item : net->named_parameters())
      if (item.key().find("_lora.") != std::string::npos) {
        torch::NoGradGuard no_grad;
        item.value().normal_(0, 0.3);  // B starts at zero: a non-zero update
        factors.push_back(item.value());
      }
    ASSERT_TRUE(!factors.empty() && factors.size() % 4 == 0);  // qkv's and proj_out's A and B per attention block
    const auto x = torch::randn({2, 3, 16, 16}), t = torch::tensor({10.0, 700.0});
    const auto weights = torch::randn({2, 3, 16, 16});
    std::vector<torch::Tensor> outputs, gradients;
    for (auto format : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
      net->zero_grad();
      auto out = net->forward(x.contiguous(format), t);
      (out * weights).sum().backward();
      outputs.push_back(out.detach());
      for (auto& f : factors) gradients.push_back(f.grad().clone());
    }
    EXPECT_LE(test::max_rel_error(outputs[1], outputs[0]), 1e-5);
    for (size_t i = 0; i < factors.size(); ++i)
      EXPECT_LE(test::max_rel_error(gradients[factors.size() + i], gradients[i]), 1e-4) << "factor " << i;
  }
}

TEST(AdmUNet, PublishedConfigsHaveThePublishedParameterCounts) {
  nets::AdmUNet ffhq(nets::AdmConfig::preset("adm-ffhq-256"));
  EXPECT_EQ(nets::count_parameters(*ffhq), 93563910);
  nets::AdmUNet imagenet(nets::AdmConfig::preset("adm-256-uncond"));
  EXPECT_EQ(nets::count_parameters(*imagenet), 552814086);
}

TEST(AdmUNet, MismatchedCheckpointIsRefusedWithTheFirstProblems) {
  auto ref = load_reference("updown_legacy");
  ref.weights.erase("out.2.bias");
  ref.weights["extra.weight"] = torch::zeros({1});
  ref.weights["time_embed.0.weight"] = torch::zeros({3, 3});
  nets::AdmUNet net(ref.config);
  try {
    nets::load_state_dict(*net, ref.weights, "bad.pt");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("bad.pt"), std::string::npos) << msg;
    EXPECT_NE(msg.find("out.2.bias"), std::string::npos) << msg;
    EXPECT_NE(msg.find("extra.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("time_embed.0.weight (3x3 in the file"), std::string::npos) << msg;
  }
}

TEST(AdmUNet, ConfigIsRecoveredFromAStateDict) {
  for (auto preset : {"adm-ffhq-256", "ud2m-small-64"}) {
    auto config = nets::AdmConfig::preset(preset);
    nets::AdmUNet net(config);
    auto inferred = nets::infer_adm_config(nets::state_dict(*net), preset, config.num_head_channels, config.image_size);
    inferred.num_heads = config.num_heads;  // not stored in weights; head channels decide
    inferred.dropout = config.dropout;
    EXPECT_EQ(inferred.to_json(), config.to_json()) << preset;
  }
  auto ref = load_reference("conv_new_classes");  // conv resampling, classes, no scale-shift
  auto inferred = nets::infer_adm_config(ref.weights, "ref", 16, 16);
  EXPECT_EQ(inferred.num_classes, 10);
  EXPECT_FALSE(inferred.use_scale_shift_norm);
  EXPECT_FALSE(inferred.resblock_updown);
  EXPECT_EQ(inferred.num_res_blocks, 2);
  EXPECT_EQ(inferred.channel_mult, (std::vector<int>{1, 2}));
  EXPECT_EQ(inferred.attention_resolutions, (std::vector<int>{16, 8}));
  EXPECT_THROW(nets::infer_adm_config({{"x", torch::zeros({1})}}, "junk"), Error);
}

TEST(AdmUNet, OriginalTorchSaveCheckpointConvertsAndMatches) {
  auto ref = load_reference("published_style");
  auto dir = test::temp_dir();
  auto pt = (test::refs_dir("adm") / "published_style.pt").string();
  auto out = (dir / "prior.safetensors").string();
  auto r = test::run_ud2m("convert " + pt + " " + out + " --head-channels 16 --image-size 32");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto prior = diffusion::load_prior(out);
  torch::NoGradGuard no_grad;
  auto raw = static_cast<diffusion::AdmPrior&>(*prior).net()->forward(ref.inputs.at("x"), ref.inputs.at("t"));
  EXPECT_LE(test::max_rel_error(raw, ref.inputs.at("out")), 1e-5);
  // Loading the .pt directly gives the same network.
  auto direct = diffusion::load_prior(pt, {16, 32});
  EXPECT_TRUE(torch::equal(direct->epsilon(ref.inputs.at("x"), ref.inputs.at("t")),
                           prior->epsilon(ref.inputs.at("x"), ref.inputs.at("t"))));
}

TEST(AdmUNet, ConvertRefusesNonModelsWithOneClearError) {
  auto dir = test::temp_dir();
  auto junk = (dir / "junk.safetensors").string();
  write_safetensors(junk, {{"w", torch::zeros({2})}});
  auto r = test::run_ud2m("convert " + junk + " " + (dir / "out.safetensors").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("holds no known diffusion network"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "out.safetensors"));
}

TEST(AdmUNet, PriorFileWhoseTensorsDoNotFitItsConfigIsRefused) {
  // ud2m prior files are read tensor by tensor into the network their metadata
  // names; the same checks apply before anything is copied.
  auto dir = test::temp_dir();
  const auto path = (dir / "prior.safetensors").string();
  diffusion::save_prior(path, *std::make_shared<diffusion::AdmPrior>(nets::AdmConfig::preset("tiny-16"),
                                                                     diffusion::Schedule::linear()));
  auto file = read_safetensors(path);
  file.tensors["out.2.bias"] = torch::zeros({7});
  file.tensors.erase("time_embed.0.weight");
  write_safetensors(path, file.tensors, file.metadata);
  EXPECT_THROW_MSG(diffusion::load_prior(path), "out.2.bias (7 in the file, 3 expected)");
  EXPECT_THROW_MSG(diffusion::load_prior(path), "time_embed.0.weight");
}

// bf16 activations are normalised in fp32 (statistics and affine): the result
// is the fp32 computation rounded once to bf16, also channels-last.
TEST(Fp32GroupNorm, Bf16ActivationsAreNormalisedInFp32) {
  nets::Fp32GroupNorm norm(8, 32, 1e-6);
  torch::manual_seed(3);
  {
    torch::NoGradGuard no_grad;
    norm->weight.normal_();
    norm->bias.normal_();
  }
  auto x = (3 * torch::randn({2, 32, 12, 12}) + 5).to(torch::kBFloat16);  // an offset that bf16 statistics would blur
  namespace F = torch::nn::functional;
  auto expected = F::group_norm(x.to(torch::kFloat32), F::GroupNormFuncOptions(8).weight(norm->weight)
                                                           .bias(norm->bias).eps(1e-6)).to(torch::kBFloat16);
  for (auto format : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
    auto out = norm(x.contiguous(format));
    EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
    EXPECT_LE((out.to(torch::kFloat32) - expected.to(torch::kFloat32)).abs().max().item<double>(),
              0.01 * expected.to(torch::kFloat32).abs().max().item<double>());
  }
}

// The residual blocks' norm-then-activation. Outside autograd the fused CPU
// kernel (nets/group_norm_silu_cpu.cpp) must give the composed fp32 ops to
// float rounding, in both layouts: a mean far from zero (E[x²] − E[x]² would
// cancel in float), gains that push SiLU's argument to ±100 (its exponential
// clamps there), and NHWC pixels split across chunks; with an input bias
// (a convolution's, per channel, or per sample and channel) the norm is that
// of x + bias. bf16: one rounding of the fp32 result. Under autograd the
// composed ops themselves run.
TEST(Fp32GroupNorm, ForwardSiluIsNormScaleShiftThenSilu) {
  namespace F = torch::nn::functional;
  torch::manual_seed(4);
  for (auto [batch, channels, groups, height, width, gain] :
       {std::tuple{2, 32, 8, 6, 6, 1.0}, std::tuple{1, 64, 32, 23, 19, 1.0}, std::tuple{2, 16, 4, 5, 7, 40.0}}) {
    SCOPED_TRACE(std::to_string(channels) + " channels, gain " + std::to_string(gain));
    nets::Fp32GroupNorm norm(groups, channels, 1e-5);
    norm->weight.data().copy_(gain * (1 + 0.3 * torch::randn({channels})));
    norm->bias.data().copy_(0.2 * torch::randn({channels}));
    auto x = 3 * torch::randn({batch, channels, height, width}) + 5;
    auto scale = 1 + 0.5 * torch::randn({batch, channels, 1, 1}), shift = torch::randn({batch, channels, 1, 1});
    auto conv_bias = 2 * torch::randn({channels}), sample_bias = 2 * torch::randn({batch, channels, 1, 1});
    // The fp64 computation on the very inputs the kernel sees (bf16: rounded).
    auto reference = [&](const torch::Tensor& input, const torch::Tensor& k, const torch::Tensor& t) {
      auto f64 = [](const torch::Tensor& v) { return v.to(torch::kFloat64); };
      auto normed = F::group_norm(f64(input), F::GroupNormFuncOptions(groups).weight(f64(norm->weight))
                                                  .bias(f64(norm->bias)).eps(1e-5));
      return F::silu(k.defined() ? normed * f64(k) + f64(t) : normed);
    };
    for (auto format : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
      SCOPED_TRACE(format == torch::MemoryFormat::Contiguous ? "NCHW" : "NHWC");
      for (auto [dtype, tolerance] : {std::pair{torch::kFloat32, 1e-6}, std::pair{torch::kBFloat16, 0.008}}) {
        torch::NoGradGuard no_grad;
        auto xd = x.to(dtype).contiguous(format);
        auto kd = scale.to(dtype), td = shift.to(dtype);
        auto plain = norm->forward_silu(xd);
        auto affine = norm->forward_silu(xd, kd, td);
        EXPECT_EQ(affine.scalar_type(), dtype);
        EXPECT_TRUE(affine.is_contiguous(format));
        auto check = [&](const torch::Tensor& got, const torch::Tensor& expected) {
          auto error = (got.to(torch::kFloat64) - expected).abs();
          const double scale_of = expected.abs().max().item<double>();
          // float: a few ulp of the largest value (x·a + s cancels there, as in PyTorch's kernel)
          const double floor = dtype == torch::kFloat32 ? 1e-6 * scale_of : 0.008 * 1e-3 * scale_of;
          EXPECT_TRUE((error <= tolerance * expected.abs() + floor).all().item<bool>())
              << "max error " << error.max().item<double>() << " of " << scale_of;
        };
        check(plain, reference(xd, {}, {}));
        check(affine, reference(xd, kd, td));
        EXPECT_FALSE(torch::equal(affine, plain));
        auto biased_input = [&](const torch::Tensor& bias) {
          return xd.to(torch::kFloat64) + bias.to(torch::kFloat64).reshape({-1, channels, 1, 1});
        };
        check(norm->forward_silu(xd, kd, td, conv_bias), reference(biased_input(conv_bias), kd, td));
        check(norm->forward_silu(xd, {}, {}, sample_bias), reference(biased_input(sample_bias), {}, {}));
      }
    }
  }
  nets::Fp32GroupNorm norm(8, 32, 1e-5);
  auto x = torch::randn({2, 32, 6, 6}).requires_grad_(true);
  auto scale = 1 + torch::randn({2, 32, 1, 1}), shift = torch::randn({2, 32, 1, 1});
  auto y = norm->forward_silu(x, scale, shift);
  EXPECT_TRUE(torch::equal(y, torch::silu(norm(x) * scale + shift)));
  y.sum().backward();
  EXPECT_TRUE(x.grad().defined());
  auto bias = torch::randn({32}).requires_grad_(true);
  y = norm->forward_silu(x, scale, shift, bias);
  EXPECT_TRUE(torch::equal(y, torch::silu(norm(x + bias.view({1, 32, 1, 1})) * scale + shift)));
  y.sum().backward();
  EXPECT_TRUE(bias.grad().defined());
}
