#include <filesystem>

#include <ATen/CPUGeneratorImpl.h>

#include "core/image.hpp"
#include "train/prior_trainer.hpp"
#include "test_util.hpp"

using namespace ud2m;

namespace {

// A few smooth random "photos" so the test needs no data files.
std::shared_ptr<train::CropDataset> tiny_photos(const std::filesystem::path& dir) {
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
  return std::make_shared<train::CropDataset>(paths, 16, 2);
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
