#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "core/device.hpp"
#include "core/image.hpp"
#include "core/random.hpp"
#include "dist/launch.hpp"
#include "io/safetensors.hpp"
#include "train/prior_trainer.hpp"
#include "test_util.hpp"

using namespace ud2m;

namespace {

// A few smooth random "photos" so the test needs no data files.
std::vector<std::string> write_tiny_photos(const std::filesystem::path& dir) {
  torch::manual_seed(3);
  std::vector<std::string> paths;
  for (int i = 0; i < 3; ++i) {
    auto coarse = torch::rand({1, 3, 4, 5});
    auto image = torch::nn::functional::interpolate(
        coarse, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{40, 48})
                    .mode(torch::kBilinear).align_corners(false));
    paths.push_back((dir / ("p" + std::to_string(i) + ".png")).string());
    write_png(paths.back(), image);
  }
  return paths;
}

std::shared_ptr<train::CropDataset> tiny_photos(const std::filesystem::path& dir) {
  return std::make_shared<train::CropDataset>(write_tiny_photos(dir), 16, 2);
}

train::PriorTrainOptions tiny_options(const std::filesystem::path& dir) {
  train::PriorTrainOptions o;
  o.out_dir = (dir / "run").string();
  o.config = "tiny-16";
  o.crop = 16;
  o.batch = 4;
  o.lr = 1e-3;
  o.sample_every = 0;
  return o;
}

}  // namespace

TEST(CropDataset, BatchesAreCropsInModelRange) {
  auto dir = test::temp_dir();
  auto data = tiny_photos(dir);
  EXPECT_EQ(data->photos(), 3u);
  EXPECT_EQ(data->pyramid_images(), 6u);  // short side 40: levels 16 and 32
  auto rng = at::make_generator<at::CPUGeneratorImpl>(0);
  auto batch = data->batch(5, rng);
  EXPECT_EQ(batch.sizes(), (std::vector<int64_t>{5, 3, 16, 16}));
  EXPECT_GE(batch.min().item<float>(), -1.0f);
  EXPECT_LE(batch.max().item<float>(), 1.0f);
}

TEST(PriorTrainer, ResumeAfterAKillGivesTheSameNextLosses) {
  auto dir = test::temp_dir();
  auto data = tiny_photos(dir);
  auto options = tiny_options(dir);
  std::vector<float> uninterrupted;
  {
    train::PriorTrainer trainer(options, data);
    trainer.step();
    trainer.step();
    trainer.save_checkpoint();
    for (int i = 0; i < 3; ++i) uninterrupted.push_back(trainer.step());
  }
  train::PriorTrainer resumed(options, data);  // as after a kill: state from the checkpoint only
  ASSERT_EQ(resumed.current_step(), 2);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(resumed.step(), uninterrupted[i]) << "step " << i + 3;
}

TEST(PriorTrainer, LossDecreasesOnRealPixels) {
  auto dir = test::temp_dir();
  auto options = tiny_options(dir);
  options.batch = 8;
  train::PriorTrainer trainer(options, tiny_photos(dir));
  double first = 0, last = 0;
  const int n = 60, window = 10;
  for (int i = 0; i < n; ++i) {
    const double loss = trainer.step();
    if (i < window) first += loss / window;
    if (i >= n - window) last += loss / window;
  }
  EXPECT_LT(last, 0.7 * first) << "first " << first << " last " << last;
}

TEST(PriorTrainer, WritesAShippablePriorThatLoads) {
  auto dir = test::temp_dir();
  auto options = tiny_options(dir);
  train::PriorTrainer trainer(options, tiny_photos(dir));
  trainer.step();
  trainer.save_checkpoint();
  auto prior = diffusion::load_prior(options.out_dir + "/prior.safetensors");
  EXPECT_EQ(prior->image_size(), 16);
  // bf16 storage of the EMA weights: equal to them up to bf16 rounding.
  auto a = prior->module().parameters()[0];
  auto b = trainer.ema().net()->parameters()[0];
  EXPECT_TRUE(torch::allclose(a, b.to(torch::kBFloat16).to(torch::kFloat32)));
}

TEST(PriorTrainer, InitStartsFromAnotherRunsWeights) {
  auto dir = test::temp_dir();
  auto first = tiny_options(dir);
  train::PriorTrainer trained(first, tiny_photos(dir));
  for (int i = 0; i < 3; ++i) trained.step();
  trained.save_checkpoint();
  auto second = tiny_options(dir / "b");
  second.init = first.out_dir + "/prior.safetensors";
  train::PriorTrainer continued(second, tiny_photos(dir));
  EXPECT_EQ(continued.current_step(), 0);  // a new run, not a resume
  auto shipped = diffusion::load_prior(second.init)->module().parameters();
  auto model = continued.model().net()->parameters(), ema = continued.ema().net()->parameters();
  for (size_t i = 0; i < shipped.size(); ++i) {
    EXPECT_TRUE(torch::equal(model[i], shipped[i])) << i;
    EXPECT_TRUE(torch::equal(ema[i], shipped[i])) << i;
  }
  auto other = tiny_options(dir / "c");
  other.config = "ud2m-small-64";
  other.init = second.init;
  EXPECT_THROW_MSG(train::PriorTrainer(other, tiny_photos(dir)), "another network configuration");
}

TEST(PriorTrainer, TimeLimitStopsWithACheckpointAndSamples) {
  auto dir = test::temp_dir();
  auto options = tiny_options(dir);
  options.steps = 1000000;
  options.max_seconds = 1e-9;  // spent before the first step
  options.sample_every = 1000;
  options.sample_steps = 2;
  train::PriorTrainer trainer(options, tiny_photos(dir));
  trainer.run();
  EXPECT_EQ(trainer.current_step(), 0);
  EXPECT_TRUE(std::filesystem::exists(trainer.checkpoint_path()));
  EXPECT_TRUE(std::filesystem::exists(options.out_dir + "/samples.png"));
}

TEST(Device, UnknownOrAbsentDevicesFailClearly) {
  EXPECT_EQ(parse_device("cpu"), torch::Device(torch::kCPU));
  EXPECT_THROW_MSG(parse_device("gpu"), "unknown device 'gpu'");
  EXPECT_THROW_MSG(parse_device("cudax"), "unknown device 'cudax'");
  if (!torch::cuda::is_available()) EXPECT_THROW_MSG(parse_device("cuda"), "no CUDA GPU is usable here");
}

TEST(Device, Bf16CountsAsFastOnGpusAndOnCpusWithAvx512) {
  // Checked against the kernel's own list of this CPU's flags.
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::set<std::string> flags;
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string word; words >> word;) flags.insert(word);
    break;
  }
  if (flags.empty()) GTEST_SKIP() << "no CPU flags in /proc/cpuinfo";
  EXPECT_EQ(has_fast_bf16(torch::kCPU), flags.count("avx512bw") && flags.count("avx512vl") && flags.count("avx512dq"));
  EXPECT_TRUE(has_fast_bf16(torch::Device(torch::kCUDA, 0)));
}

TEST(Device, NoiseIsTheSameWhereverItIsDelivered) {
  auto a = at::make_generator<at::CPUGeneratorImpl>(5), b = at::make_generator<at::CPUGeneratorImpl>(5);
  EXPECT_TRUE(torch::equal(gaussian({2, 3}, a), at::randn({2, 3}, b)));
}

// ---- data parallel training across processes --------------------------------

namespace {

// train-prior on tiny-16, fp32 (bf16 rounding would blur the comparison), no
// dropout in that config: W processes must reproduce one process.
std::string tiny_cli_args(const std::filesystem::path& dir, const std::string& out, int steps = 4,
                          int save_every = 4) {
  return fmt::format("train-prior --data {} --out {} --config tiny-16 --crop 16 --batch 4 --steps {} --lr 1e-3 "
                     "--bf16 false --seed 5 --save-every {} --sample-every 0",
                     (dir / "photos").string(), (dir / out).string(), steps, save_every);
}

std::filesystem::path with_photos(std::filesystem::path dir) {
  std::filesystem::create_directories(dir / "photos");
  write_tiny_photos(dir / "photos");
  return dir;
}

TensorFile checkpoint(const std::filesystem::path& dir, const std::string& out) {
  return read_safetensors((dir / out / "checkpoint.safetensors").string());
}

// ‖a − b‖ / ‖b‖ over the tensors of two checkpoints whose names start with `prefix`.
double relative_difference(const TensorFile& a, const TensorFile& b, const std::string& prefix) {
  double diff = 0, norm = 0;
  for (auto& [name, t] : b.tensors) {
    if (name.rfind(prefix, 0) != 0) continue;
    diff += (a.tensors.at(name) - t).square().sum().item<double>();
    norm += t.square().sum().item<double>();
  }
  EXPECT_GT(norm, 0) << prefix;
  return std::sqrt(diff / norm);
}

// A socket listening on a kernel-chosen port, as another job would hold it.
struct ListeningSocket {
  int fd = -1, port = 0;
  ListeningSocket() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t length = sizeof address;
    ::bind(fd, reinterpret_cast<sockaddr*>(&address), length);
    ::listen(fd, 1);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
    port = ntohs(address.sin_port);
  }
  ~ListeningSocket() { ::close(fd); }
};

}  // namespace

TEST(DataParallel, NprocIsRemovedFromTheWorkersArguments) {
  EXPECT_EQ(dist::without_nproc({"ud2m", "train-prior", "--nproc", "2", "--batch", "4", "--nproc=3"}),
            (std::vector<std::string>{"train-prior", "--batch", "4"}));
}

TEST(DataParallel, TwoProcessesMatchOneWithTheCombinedBatch) {
  auto dir = with_photos(test::temp_dir());
  auto one = test::run_ud2m(tiny_cli_args(dir, "one"));
  ASSERT_EQ(one.exit_code, 0) << one.output;
  auto spawned = test::run_ud2m(tiny_cli_args(dir, "spawned") + " --nproc 2");
  ASSERT_EQ(spawned.exit_code, 0) << spawned.output;
  EXPECT_NE(spawned.output.find("batch 4 (2 processes × 2)"), std::string::npos) << spawned.output;
  // As torchrun starts them: the launcher's variables, one command per rank.
  const int port = dist::free_loopback_port();
  const auto env = [&](int rank) {
    return fmt::format("RANK={} LOCAL_RANK={} WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={} OMP_NUM_THREADS=1 ",
                       rank, rank, port);
  };
  auto launched = test::run_command(fmt::format("{0}{2} {3} > {4} 2>&1 & {1}{2} {3}; rank0=$?; wait $! && exit $rank0",
                                                env(1), env(0), test::ud2m_binary(), tiny_cli_args(dir, "launched"),
                                                (dir / "rank1.log").string()));
  ASSERT_EQ(launched.exit_code, 0) << launched.output;

  auto reference = checkpoint(dir, "one");
  ASSERT_EQ(reference.tensors.at("loss").numel(), 4);
  for (const std::string out : {"spawned", "launched"}) {
    auto file = checkpoint(dir, out);
    // Only the order of floating-point sums differs (2 half-batch means vs 1
    // mean). Losses (global means) agree to ~1e-7. Weights and Adam's first
    // moments (averaged gradients) to ~5e-5: where a gradient is ~0 (e.g. conv
    // biases before a GroupNorm) rounding flips its sign, Adam's first steps
    // move such weights by ±lr whatever the gradient's size, and later
    // gradients see that. Ranks that did not average their gradients, or drew
    // the wrong samples, differ by order 1.
    const double loss_diff = (file.tensors.at("loss") - reference.tensors.at("loss")).abs().max().item<double>();
    const double gradient_diff = relative_difference(file, reference, "adam.exp_avg.");
    const double weight_diff = relative_difference(file, reference, "model.");
    std::cout << out << ": max |loss difference| " << loss_diff << ", relative differences: Adam first moments "
              << gradient_diff << ", weights " << weight_diff << "\n";
    EXPECT_LT(loss_diff, 1e-5) << out;
    EXPECT_LT(gradient_diff, 1e-3) << out;
    EXPECT_LT(weight_diff, 1e-3) << out;
  }
}

TEST(DataParallel, BadRequestsFailClearly) {
  auto dir = with_photos(test::temp_dir());
  auto zero = test::run_ud2m(tiny_cli_args(dir, "a") + " --nproc 0");
  EXPECT_NE(zero.exit_code, 0);
  EXPECT_NE(zero.output.find("--nproc must be at least 1"), std::string::npos) << zero.output;

  auto odd = test::run_ud2m(tiny_cli_args(dir, "b") + " --nproc 3");
  EXPECT_NE(odd.exit_code, 0);
  EXPECT_NE(odd.output.find("batch (4) must be divisible by the number of processes (3)"), std::string::npos)
      << odd.output;

  ListeningSocket taken;
  auto busy = test::run_command(fmt::format("MASTER_PORT={} {} {} --nproc 2", taken.port, test::ud2m_binary(),
                                            tiny_cli_args(dir, "c")));
  EXPECT_NE(busy.exit_code, 0);
  EXPECT_NE(busy.output.find(fmt::format("MASTER_PORT={} is taken", taken.port)), std::string::npos) << busy.output;

  auto busy_rank0 = test::run_command(fmt::format("RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT={} {} {}",
                                                  taken.port, test::ud2m_binary(), tiny_cli_args(dir, "d")));
  EXPECT_NE(busy_rank0.exit_code, 0);
  EXPECT_NE(busy_rank0.output.find("rank 0 cannot serve the rendezvous"), std::string::npos) << busy_rank0.output;

  auto no_addr = test::run_command(fmt::format("RANK=1 WORLD_SIZE=2 {} {}", test::ud2m_binary(),
                                               tiny_cli_args(dir, "e")));
  EXPECT_NE(no_addr.exit_code, 0);
  EXPECT_NE(no_addr.output.find("MASTER_ADDR is required"), std::string::npos) << no_addr.output;

  auto both = test::run_command(fmt::format("WORLD_SIZE=2 {} {} --nproc 2", test::ud2m_binary(),
                                            tiny_cli_args(dir, "f")));
  EXPECT_NE(both.exit_code, 0);
  EXPECT_NE(both.output.find("drop it when a launcher sets WORLD_SIZE"), std::string::npos) << both.output;
  for (auto out : {"a", "b", "c", "d", "e", "f"})
    EXPECT_FALSE(std::filesystem::exists(dir / out / "checkpoint.safetensors")) << out;
}

TEST(DataParallel, AKilledWorkerStopsTheJobAndAResumeFinishesIt) {
  auto dir = with_photos(test::temp_dir());
  const auto log = (dir / "job.log").string(), ckpt = (dir / "run" / "checkpoint.safetensors").string();
  // Train "forever", checkpointing every 2 steps; once a checkpoint exists, kill rank 1.
  auto killed = test::run_command(fmt::format(
      "{} {} --nproc 2 > {} 2>&1 & parent=$!; "
      "for i in $(seq 600); do pid=$(sed -n 's/.*rank 1 is process \\([0-9]*\\).*/\\1/p' {} 2>/dev/null); "
      "[ -n \"$pid\" ] && [ -f {} ] && break; sleep 0.1; done; kill -9 $pid; wait $parent; echo \"parent: $?\"; cat {}",
      test::ud2m_binary(), tiny_cli_args(dir, "run", 1000000, 2), log, log, ckpt, log));
  EXPECT_NE(killed.output.find("parent: 1"), std::string::npos) << killed.output;
  EXPECT_NE(killed.output.find("worker rank 1 of 2"), std::string::npos) << killed.output;
  EXPECT_NE(killed.output.find("killed by signal 9"), std::string::npos) << killed.output;

  // The checkpoint on disk is whole (written atomically), at a multiple of --save-every.
  auto meta = nlohmann::json::parse(checkpoint(dir, "run").metadata.at("ud2m_train"));
  const int64_t step = meta.at("step");
  EXPECT_EQ(step % 2, 0);
  auto resumed = test::run_ud2m(tiny_cli_args(dir, "run", static_cast<int>(step) + 2, 2) + " --nproc 2");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find(fmt::format("resumed from '{}' at step {}", ckpt, step)), std::string::npos)
      << resumed.output;
  EXPECT_EQ(nlohmann::json::parse(checkpoint(dir, "run").metadata.at("ud2m_train")).at("step").get<int64_t>(),
            step + 2);
}
