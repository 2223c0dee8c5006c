// GPU paths: the same networks on the GPU as on the CPU, and CUDA-graph replay
// equal to plain calls. Skipped where no CUDA GPU is usable (CI); bench/gpu.sh
// runs them on a GPU machine.
#include <torch/cuda.h>

#include <string>
#include <tuple>

#include "core/image.hpp"
#include "diffusion/graphed_denoiser.hpp"
#include "diffusion/prior.hpp"
#include "metrics/metrics.hpp"
#include "ncvsd/networks.hpp"
#include "nets/channel_cat.hpp"
#include "nets/fp32_group_norm.hpp"
#include "nets/residual_add.hpp"
#include "samplers/ddim.hpp"
#include "ud2m/adapter.hpp"
#include "ud2m/unrolled.hpp"
#include "test_util.hpp"
#include "tiny_priors.hpp"
#include "tiny_runs.hpp"

using namespace ud2m;

namespace {

#define UD2M_REQUIRE_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU here"

using test::tiny_adm;
using test::tiny_ddpm;

double relative_error(const torch::Tensor& a, const torch::Tensor& b) { return test::max_rel_error(a.cpu(), b.cpu()); }

// TF32 off, so the GPU computes in fp32 as the CPU does.
void full_precision_on_gpu() {
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
}

// ε of a prior on the GPU against the same weights on the CPU, full precision
// (TF32 off, so both sides compute in fp32).
void expect_same_on_gpu(const diffusion::PriorPtr& prior) {
  torch::NoGradGuard no_grad;
  full_precision_on_gpu();
  auto x = torch::randn({2, 3, 16, 16});
  auto t = torch::tensor({10.0f, 700.0f});
  auto on_cpu = prior->epsilon(x, t);
  prior->module().to(torch::kCUDA);
  auto on_gpu = prior->epsilon(x.cuda(), t.cuda());
  EXPECT_TRUE(on_gpu.is_cuda());
  EXPECT_LT(relative_error(on_gpu, on_cpu), 1e-4);
}

// Runs `command` + an output path on the CPU, then with --device cuda: on a
// GPU the two images agree to > 40 dB (TF32 convolutions there); without one
// the flag is refused with a sentence.
void expect_gpu_writes_the_cpu_image(const std::filesystem::path& dir, const std::string& name,
                                     const std::string& command) {
  SCOPED_TRACE(name);
  const auto on_cpu = dir / (name + "_cpu.png"), on_gpu = dir / (name + "_gpu.png");
  auto cpu = test::run_ud2m(command + on_cpu.string());
  ASSERT_EQ(cpu.exit_code, 0) << cpu.output;
  auto gpu = test::run_ud2m(command + on_gpu.string() + " --device cuda");
  if (!torch::cuda::is_available()) {
    EXPECT_NE(gpu.exit_code, 0);
    EXPECT_NE(gpu.output.find("no CUDA GPU is usable here"), std::string::npos) << gpu.output;
    return;
  }
  ASSERT_EQ(gpu.exit_code, 0) << gpu.output;
  EXPECT_GT(metrics::psnr(read_image(on_gpu.string()), read_image(on_cpu.string())), 40.0)
      << "(TF32 convolutions on the GPU)";
}

}  // namespace

TEST(Cuda, FusedGroupNormSiluGivesTheFp32ComputationInBothLayouts) {
  // The fused kernels against silu(group_norm(x)·scale + shift) in fp32 on the
  // CPU from the same bf16 input: within bf16's rounding of the result (one
  // rounding in the kernel). Inputs off-centre (mean 4, std 0.5) so a naive
  // E[x²] − E[x]² would lose the variance. The shapes take each path: one
  // element at a time (NCHW: 110 and 63 pixels; NHWC statistics: 4, 9 and 2
  // channels per group; NHWC normalisation: 36 channels), 16-byte vectors
  // (NCHW with pixels a multiple of 8, NHWC normalisation with channels a
  // multiple of 8, NHWC statistics reading whole pixels where groups hold
  // whole vectors: the last three shapes, 1, 2 and 4 vectors per group, two
  // samples in the first), and statistics spread over several blocks per
  // group, each adding its share (uneven pixel ranges). The affine, scale
  // and shift are read in place: fp32 or bf16 norm weights, contiguous scale
  // and shift or the strided halves of one (B, 2C, 1, 1) tensor, as a
  // residual block's chunked embedding gives them; an input bias (the
  // convolution's, left to the norm) normalises x + bias; the plain forward
  // (an attention block's norm) runs the kernels without the SiLU. Under
  // autograd the composed ops run.
  UD2M_REQUIRE_CUDA();
  if (!nets::fused_group_norm_silu_available()) GTEST_SKIP() << "built without nvcc: no fused kernels";
  namespace F = torch::nn::functional;
  torch::manual_seed(0);
  for (auto [batch, channels, groups, height, width] :
       {std::tuple{2, 32, 8, 11, 10}, std::tuple{1, 36, 4, 9, 7}, std::tuple{1, 64, 32, 48, 40},
        std::tuple{2, 256, 32, 40, 36}, std::tuple{1, 512, 32, 24, 20}, std::tuple{1, 1024, 32, 9, 7}}) {
    SCOPED_TRACE("channels " + std::to_string(channels) + ", " + std::to_string(height * width) + " pixels");
    nets::Fp32GroupNorm norm(groups, channels, 1e-5), norm_bf16(groups, channels, 1e-5);
    auto in_bf16 = [](const torch::Tensor& t) { return t.to(torch::kBFloat16).to(torch::kFloat32); };  // exact in both
    norm->weight.data().copy_(in_bf16(1 + 0.3 * torch::randn({channels})));
    norm->bias.data().copy_(in_bf16(0.2 * torch::randn({channels})));
    norm_bf16->weight.data().copy_(norm->weight);
    norm_bf16->bias.data().copy_(norm->bias);
    norm_bf16->to(torch::kCUDA, torch::kBFloat16);
    auto x = (4 + 0.5 * torch::randn({batch, channels, height, width})).to(torch::kBFloat16);
    auto scale = (1 + 0.5 * torch::randn({batch, channels, 1, 1})).to(torch::kBFloat16);
    auto shift = (0.5 * torch::randn({batch, channels, 1, 1})).to(torch::kBFloat16);
    auto normed = F::group_norm(x.to(torch::kFloat32), F::GroupNormFuncOptions(groups).weight(norm->weight)
                                                            .bias(norm->bias).eps(1e-5));
    const auto expected_plain = F::silu(normed);
    const auto expected_affine = F::silu(normed * scale.to(torch::kFloat32) + shift.to(torch::kFloat32));
    const auto input_bias = torch::randn({channels});
    const auto expected_biased =
        F::silu(F::group_norm(x.to(torch::kFloat32) + input_bias.view({1, channels, 1, 1}),
                              F::GroupNormFuncOptions(groups).weight(norm->weight).bias(norm->bias).eps(1e-5)) *
                    scale.to(torch::kFloat32) + shift.to(torch::kFloat32));
    norm->to(torch::kCUDA);
    for (auto format : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
      SCOPED_TRACE(format == torch::MemoryFormat::Contiguous ? "NCHW" : "NHWC");
      auto xg = x.cuda().contiguous(format);
      torch::NoGradGuard no_grad;
      auto plain = norm->forward_silu(xg);
      auto affine = norm->forward_silu(xg, scale.cuda(), shift.cuda());
      const auto halves = torch::cat({scale, shift}, 1).cuda().chunk(2, 1);
      auto from_halves = norm_bf16->forward_silu(xg, halves[0], halves[1]);
      auto biased = norm->forward_silu(xg, scale.cuda(), shift.cuda(), input_bias.cuda());
      auto without_silu = norm->forward(xg);  // the kernels without their activation
      EXPECT_EQ(affine.scalar_type(), torch::kBFloat16);
      EXPECT_TRUE(affine.is_contiguous(format));
      EXPECT_TRUE(without_silu.is_contiguous(format));
      for (auto [got, expected] : {std::pair{plain, expected_plain}, std::pair{affine, expected_affine},
                                   std::pair{from_halves, expected_affine}, std::pair{biased, expected_biased},
                                   std::pair{without_silu, normed}}) {
        auto error = (got.cpu().to(torch::kFloat32) - expected).abs();
        EXPECT_TRUE((error <= 0.008 * expected.abs() + 1e-3).all().item<bool>())
            << "max error " << error.max().item<double>();
      }
    }
  }
  nets::Fp32GroupNorm norm(8, 32, 1e-5);
  norm->to(torch::kCUDA);
  auto x = (4 + 0.5 * torch::randn({2, 32, 12, 10})).to(torch::kBFloat16);
  auto xg = x.cuda().to(torch::kFloat32).requires_grad_(true);  // autograd: the composed, differentiable ops
  auto y = norm->forward_silu(xg.to(torch::kBFloat16));
  ASSERT_TRUE(y.requires_grad());
  y.to(torch::kFloat32).sum().backward();
  EXPECT_TRUE(xg.grad().defined());
}

// The decoder's concatenation copies whole channels-last pixels: exactly
// torch::cat's result, channels-last, in each unit the kernel picks (16-byte
// rows of bf16, 4-byte rows of fp32, odd bf16 rows byte by byte); NCHW inputs
// and autograd take torch::cat itself.
TEST(Cuda, ChannelConcatenationIsTorchCatOfWholePixels) {
  UD2M_REQUIRE_CUDA();
  torch::manual_seed(0);
  const auto channels_last = torch::MemoryFormat::ChannelsLast;
  for (auto [dtype, first, second] : {std::tuple{torch::kBFloat16, 256, 128}, std::tuple{torch::kFloat32, 3, 5},
                                      std::tuple{torch::kBFloat16, 3, 6}}) {
    SCOPED_TRACE(std::to_string(first) + " + " + std::to_string(second) + " channels");
    auto a = torch::randn({2, first, 5, 7}).to(dtype).cuda().contiguous(channels_last);
    auto b = torch::randn({2, second, 5, 7}).to(dtype).cuda().contiguous(channels_last);
    torch::NoGradGuard no_grad;
    auto y = nets::cat_channels(a, b);
    EXPECT_TRUE(y.is_contiguous(channels_last));
    EXPECT_TRUE(torch::equal(y, torch::cat({a, b}, 1)));
  }
  auto a = torch::randn({1, 4, 3, 3}, torch::kCUDA), b = torch::randn({1, 2, 3, 3}, torch::kCUDA);
  EXPECT_TRUE(torch::equal(nets::cat_channels(a, b), torch::cat({a, b}, 1)));
  auto grad_a = a.contiguous(channels_last).requires_grad_(true);
  auto joined = nets::cat_channels(grad_a, b.contiguous(channels_last));
  ASSERT_TRUE(joined.requires_grad());
  joined.sum().backward();
  EXPECT_TRUE(torch::equal(grad_a.grad(), torch::ones_like(a)));
}

TEST(Cuda, ResidualAddSumsWithBothBiasesInOneRounding) {
  // The fused closing sum of a residual block against fp32 a + b + biases on
  // the CPU: within one bf16 rounding. Shapes for each path: 16-byte vectors
  // (NHWC, 64 channels; NCHW, 48 pixels) and one element at a time (NHWC, 36
  // channels; NCHW, 63 pixels); biases in fp32 and bf16, or one absent.
  UD2M_REQUIRE_CUDA();
  if (!nets::fused_group_norm_silu_available()) GTEST_SKIP() << "built without nvcc: no fused kernels";
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  for (auto [batch, channels, height, width] : {std::tuple{2, 64, 8, 6}, std::tuple{1, 36, 9, 7}}) {
    auto a = torch::randn({batch, channels, height, width}).to(torch::kBFloat16);
    auto b = torch::randn({batch, channels, height, width}).to(torch::kBFloat16);
    auto bias1 = torch::randn({channels}), bias2 = torch::randn({channels}).to(torch::kBFloat16);
    auto sum = [&](bool second) {
      auto s = a.to(torch::kFloat32) + b.to(torch::kFloat32) + bias1.view({1, -1, 1, 1});
      return second ? s + bias2.to(torch::kFloat32).view({1, -1, 1, 1}) : s;
    };
    for (auto format : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
      SCOPED_TRACE(std::to_string(channels) + " channels, " + (format == torch::MemoryFormat::Contiguous ? "NCHW"
                                                                                                         : "NHWC"));
      auto ag = a.cuda().contiguous(format), bg = b.cuda().contiguous(format);
      ASSERT_TRUE(nets::fused_residual_add_applies(ag));
      for (bool second : {true, false}) {
        auto got = nets::residual_add(ag, bg, bias1.cuda(), second ? bias2.cuda() : torch::Tensor());
        EXPECT_TRUE(got.is_contiguous(format));
        const auto expected = sum(second);
        auto error = (got.cpu().to(torch::kFloat32) - expected).abs();
        EXPECT_TRUE((error <= 0.004 * expected.abs() + 1e-6).all().item<bool>())
            << "max error " << error.max().item<double>();
      }
    }
  }
}

// The whole network in bf16 on the GPU (fused GroupNorm+SiLU with the
// convolutions' biases folded in, fused residual sums, flash attention) against
// fp32 on the CPU: within bf16's accuracy, in both layouts and batch 2.
TEST(Cuda, AdmPriorInBf16OnTheGpuGivesTheCpuEpsilon) {
  UD2M_REQUIRE_CUDA();
  torch::NoGradGuard no_grad;
  auto prior = tiny_adm();
  auto x = torch::randn({2, 3, 16, 16});
  auto t = torch::tensor({10.0f, 700.0f});
  auto on_cpu = prior->epsilon(x, t);
  prior->module().to(torch::kCUDA);
  for (bool channels_last : {false, true}) {
    SCOPED_TRACE(channels_last ? "channels-last" : "NCHW");
    prior->set_inference_precision(torch::kBFloat16, channels_last);
    auto xg = x.cuda();
    if (channels_last) xg = xg.contiguous(torch::MemoryFormat::ChannelsLast);
    EXPECT_LT(relative_error(prior->epsilon(xg, t.cuda()).to(torch::kFloat32), on_cpu), 0.03);
  }
}

TEST(Cuda, AdmPriorOnTheGpuGivesTheCpuEpsilon) {
  UD2M_REQUIRE_CUDA();
  expect_same_on_gpu(tiny_adm());
}

TEST(Cuda, DdpmPriorOnTheGpuGivesTheCpuEpsilon) {
  UD2M_REQUIRE_CUDA();
  expect_same_on_gpu(tiny_ddpm());
}

TEST(Cuda, GraphReplayGivesThePlainCallsOutputsForNewInputsAndShapes) {
  UD2M_REQUIRE_CUDA();
  torch::NoGradGuard no_grad;
  for (const diffusion::PriorPtr& prior : std::vector<diffusion::PriorPtr>{tiny_adm(), tiny_ddpm()}) {
    prior->module().to(torch::kCUDA);
    diffusion::GraphedDenoiser graphed(prior);
    for (int64_t batch : {1, 1, 3}) {  // a replay, another replay on new values, a re-capture
      auto x = torch::randn({batch, 3, 16, 16}, torch::kCUDA);
      auto t = torch::randint(0, 1000, {batch}, torch::kCUDA).to(torch::kFloat32);
      auto replayed = graphed.epsilon(x, t);
      EXPECT_TRUE(graphed.replayed());
      EXPECT_LT(relative_error(replayed, prior->epsilon(x, t)), 1e-6);
    }
  }
}

TEST(Cuda, DdimSamplingOnTheGpuMatchesTheCpu) {
  UD2M_REQUIRE_CUDA();
  full_precision_on_gpu();
  auto prior = tiny_adm();
  torch::Generator rng_cpu = at::make_generator<at::CPUGeneratorImpl>(7);
  auto on_cpu = samplers::sample_ddim(*prior, {1, 3, 16, 16}, 10, 0.5, rng_cpu);
  prior->module().to(torch::kCUDA);
  diffusion::GraphedDenoiser graphed(prior);
  torch::Generator rng_gpu = at::make_generator<at::CPUGeneratorImpl>(7);
  auto on_gpu = samplers::sample_ddim(graphed, {1, 3, 16, 16}, 10, 0.5, rng_gpu, {}, torch::kCUDA);
  EXPECT_TRUE(on_gpu.is_cuda());
  EXPECT_LT(relative_error(on_gpu, on_cpu), 1e-3);
}

TEST(GraphedDenoiser, CallsStraightThroughOnTheCpu) {
  torch::NoGradGuard no_grad;
  auto prior = tiny_adm();
  diffusion::GraphedDenoiser graphed(prior);
  auto x = torch::randn({1, 3, 16, 16});
  auto t = torch::full({1}, 300.0f);
  EXPECT_TRUE(torch::equal(graphed.epsilon(x, t), prior->epsilon(x, t)));
  EXPECT_FALSE(graphed.replayed());
  EXPECT_EQ(&graphed.schedule(), &prior->schedule());
}

// `sample` and `denoise` take --device: on a GPU they write what the CPU writes
// (PSNR between them > 40 dB); without one they refuse with a sentence.
TEST(Cuda, SampleAndDenoiseOnTheGpuWriteTheCpuImages) {
  const auto dir = test::temp_dir();
  const auto model = (dir / "prior.safetensors").string();
  diffusion::save_prior(model, *tiny_adm());
  const std::string sample = "sample --model " + model + " --steps 5 --n 2 --eta 0.5 --seed 3 ";
  auto cpu = test::run_ud2m(sample + (dir / "cpu.png").string());
  ASSERT_EQ(cpu.exit_code, 0) << cpu.output;
  auto gpu = test::run_ud2m(sample + "--device cuda " + (dir / "gpu.png").string());
  if (!torch::cuda::is_available()) {
    EXPECT_NE(gpu.exit_code, 0);
    EXPECT_NE(gpu.output.find("no CUDA GPU is usable here"), std::string::npos) << gpu.output;
    return;
  }
  ASSERT_EQ(gpu.exit_code, 0) << gpu.output;
  // TF32 convolutions on the GPU: close, not equal
  auto agreement = [](const std::filesystem::path& a, const std::filesystem::path& b) {
    return metrics::psnr(read_image(b.string()), read_image(a.string()));
  };
  EXPECT_GT(agreement(dir / "cpu.png", dir / "gpu.png"), 40.0);
  const std::string denoise = "denoise --model " + model + " --sigma 0.1 " + (dir / "cpu.png").string() + " ";
  ASSERT_EQ(test::run_ud2m(denoise + (dir / "d_cpu.png").string()).exit_code, 0);
  auto d_gpu = test::run_ud2m(denoise + "--device cuda " + (dir / "d_gpu.png").string());
  ASSERT_EQ(d_gpu.exit_code, 0) << d_gpu.output;
  EXPECT_GT(agreement(dir / "d_cpu.png", dir / "d_gpu.png"), 40.0);
}

// `restore --device cuda` runs the prior on the GPU (the sampler and operator
// stay on the CPU) and writes what the CPU run writes, for a plain sampler,
// DPS (gradients through the GPU pass) and UD2M (its folded prior); without
// a GPU the flag is refused, and with one a method that runs no prior refuses it.
TEST(Cuda, RestoreOnTheGpuWritesTheCpuImages) {
  const auto dir = test::temp_dir();
  const auto model = (dir / "prior.safetensors").string();
  diffusion::save_prior(model, *tiny_adm());
  unrolled::UnrolledNetwork net(tiny_adm(), {});
  const auto adapter = (dir / "adapter.safetensors").string();
  unrolled::save_adapter(adapter, net, {"gaussian_deblur", 3, {}});
  torch::manual_seed(2);
  write_png((dir / "clean.png").string(), torch::rand({1, 3, 16, 16}));
  auto degraded = test::run_ud2m("degrade --task gaussian_deblur --sigma 0.05 " + (dir / "clean.png").string() +
                                 " " + (dir / "y.png").string());
  ASSERT_EQ(degraded.exit_code, 0) << degraded.output;
  const std::string restore = "restore -m " + (dir / "y.png").string() + " --model " + model + " ";
  auto tv = test::run_ud2m(restore + "--method tv --device cuda --out " + (dir / "tv.png").string());
  EXPECT_NE(tv.exit_code, 0);
  // Without a GPU the flag itself is refused while parsing, before any model loads.
  EXPECT_NE(tv.output.find(torch::cuda::is_available() ? "--device cuda applies to the methods that run a network"
                                                       : "no CUDA GPU is usable here"),
            std::string::npos)
      << tv.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "tv.png"));
  const std::vector<std::string> methods{"ddrm --nfe 5", "dps --nfe 5", "ud2m --adapter " + adapter};
  for (const std::string& method : methods)
    expect_gpu_writes_the_cpu_image(dir, method.substr(0, method.find(' ')), restore + "--method " + method + " --out ");
}

namespace {

// Trainer-on-GPU checks: the same arithmetic as on the CPU up to summation
// order (TF32 and bf16 off), so the same losses to ~1e-3; Adam's first steps
// move each weight by about ±lr whatever the gradient's size, so a weight whose
// gradient is ~0 may step the other way: weights agree to a few lr.
void expect_close_losses(float gpu, float cpu, const char* what, int step) {
  EXPECT_NEAR(gpu, cpu, 1e-3 * std::abs(cpu) + 1e-5) << what << " at step " << step;
}

double max_abs_difference(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, (a[i].detach().cpu() - b[i].detach().cpu()).abs().max().item<double>());
  return worst;
}

std::vector<torch::Tensor> values(const std::vector<std::pair<std::string, torch::Tensor>>& named) {
  std::vector<torch::Tensor> out;
  for (auto& [name, t] : named) out.push_back(t);
  return out;
}

}  // namespace

// `train --method ud2m --device cuda`: the networks, operators and losses on
// the GPU take the CPU run's steps, validate alike, and a run checkpointed on
// the GPU resumes on the CPU (every random draw is made on the CPU).
TEST(Cuda, Ud2mTrainingOnTheGpuTakesTheCpuStepsAndResumesOnTheCpu) {
  UD2M_REQUIRE_CUDA();
  full_precision_on_gpu();
  const auto dir = test::temp_dir();
  auto o = test::tiny_ud2m_run(dir);
  o.bf16 = false;
  o.val_images = 2;
  o.steps = 3;
  o.out_dir = (dir / "cpu").string();
  train::Ud2mTrainer cpu(o);
  const double cpu_psnr = cpu.validation_psnr();
  std::vector<train::Ud2mLosses> expected;
  for (int i = 0; i < 3; ++i) expected.push_back(cpu.step());

  o.out_dir = (dir / "gpu").string();
  o.device = "cuda";
  {
    train::Ud2mTrainer gpu(o);
    EXPECT_TRUE(gpu.network().lambda().is_cuda());
    EXPECT_NEAR(gpu.validation_psnr(), cpu_psnr, 0.01);
    for (int i = 0; i < 2; ++i) {
      auto l = gpu.step();
      expect_close_losses(l.generator, expected[i].generator, "generator loss", i);
      expect_close_losses(l.discriminator, expected[i].discriminator, "discriminator loss", i);
    }
    gpu.save_checkpoint();
  }
  o.device = "cpu";
  train::Ud2mTrainer resumed(o);
  ASSERT_EQ(resumed.current_step(), 2);
  auto last = resumed.step();
  expect_close_losses(last.generator, expected[2].generator, "generator loss after the resume", 2);
  EXPECT_LT(max_abs_difference(values(resumed.network().trainable_parameters()),
                               values(cpu.network().trainable_parameters())),
            6 * o.lr + 1e-3 * o.scalar_lr);
}

// `train --method ncvsd --device cuda`, likewise (teacher, generator, fake
// score and EMA on the GPU; the sample grid written from there).
TEST(Cuda, NcvsdTrainingOnTheGpuTakesTheCpuStepsAndResumesOnTheCpu) {
  UD2M_REQUIRE_CUDA();
  full_precision_on_gpu();
  const auto dir = test::temp_dir();
  auto o = test::tiny_ncvsd_run(dir);
  o.steps = 3;
  o.out_dir = (dir / "cpu").string();
  train::NcvsdTrainer cpu(o);
  std::vector<train::NcvsdLosses> expected;
  for (int i = 0; i < 3; ++i) expected.push_back(cpu.step());

  o.out_dir = (dir / "gpu").string();
  o.device = "cuda";
  {
    train::NcvsdTrainer gpu(o);
    EXPECT_TRUE(gpu.generator()->parameters().front().is_cuda());
    for (int i = 0; i < 2; ++i) {
      auto l = gpu.step();
      expect_close_losses(l.generator, expected[i].generator, "generator loss", i);
      expect_close_losses(l.fake, expected[i].fake, "fake-score loss", i);
    }
    gpu.save_checkpoint();
    EXPECT_TRUE(std::filesystem::exists(dir / "gpu" / "samples.png"));
  }
  o.device = "cpu";
  train::NcvsdTrainer resumed(o);
  ASSERT_EQ(resumed.current_step(), 2);
  auto last = resumed.step();
  expect_close_losses(last.generator, expected[2].generator, "generator loss after the resume", 2);
  EXPECT_LT(max_abs_difference(resumed.generator()->parameters(), cpu.generator()->parameters()), 6 * o.lr);
}

// `sample --method ncvsd` and `restore --method pnp-ncvsd` take --device: the
// generator runs on the GPU and they write what the CPU writes; without a GPU
// the flag is refused while parsing.
TEST(Cuda, NcvsdGenerationAndPnpNcvsdOnTheGpuWriteTheCpuImages) {
  const auto dir = test::temp_dir();
  const auto model = (dir / "generator.safetensors").string();
  ncvsd::ConditionalDenoiser generator(*tiny_adm());
  ncvsd::save_generator(model, *generator, {{"teacher", "tiny"}}, torch::kFloat32);
  torch::manual_seed(2);
  write_png((dir / "clean.png").string(), torch::rand({1, 3, 16, 16}));
  auto degraded = test::run_ud2m("degrade --task gaussian_deblur --sigma 0.05 " + (dir / "clean.png").string() +
                                 " " + (dir / "y.png").string());
  ASSERT_EQ(degraded.exit_code, 0) << degraded.output;
  const std::vector<std::pair<std::string, std::string>> commands{
      {"sample", "sample --method ncvsd --model " + model + " --steps 2 --n 2 --size 16 --seed 3 "},
      {"pnp", "restore --method pnp-ncvsd --model " + model + " --nfe 3 -m " + (dir / "y.png").string() + " --out "}};
  for (const auto& [name, command] : commands) expect_gpu_writes_the_cpu_image(dir, name, command);
}
