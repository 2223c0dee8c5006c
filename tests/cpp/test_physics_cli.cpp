// `ud2m degrade` end to end: outputs, sidecar, and clean failures with no file left behind.
#include <algorithm>
#include <fstream>

#include "core/atomic_file.hpp"
#include "core/image.hpp"
#include "io/safetensors.hpp"
#include "physics/degradation.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using ud2m::test::run_ud2m;

namespace {
fs::path write_photo(const fs::path& dir, int64_t h = 32, int64_t w = 32) {
  auto p = dir / "clean.png";
  ud2m::write_png(p.string(), torch::rand({1, 3, h, w}));
  return p;
}

// A failing command: non-zero exit, one "ud2m: error:" line naming `culprit`, no output files.
void expect_clean_failure(const std::string& args, const fs::path& out, const std::string& culprit) {
  auto r = run_ud2m(args);
  EXPECT_NE(r.exit_code, 0) << args;
  EXPECT_NE(r.output.find("error"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(culprit), std::string::npos) << "expected '" << culprit << "' in: " << r.output;
  EXPECT_LE(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_FALSE(fs::exists(out)) << args;
  EXPECT_FALSE(fs::exists(fs::path(out).replace_extension(".json"))) << args;
}
}  // namespace

TEST(PhysicsCli, DegradeWritesImageAndSidecar) {
  auto dir = ud2m::test::temp_dir();
  auto in = write_photo(dir);
  auto out = dir / "y.png";
  auto r = run_ud2m("degrade --task sr --factor 2 --sigma 0.01 --seed 3 " + in.string() + " " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto y = ud2m::read_image(out.string());
  EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{1, 3, 16, 16}));
  auto sidecar = nlohmann::json::parse(ud2m::read_file((dir / "y.json").string()));
  EXPECT_EQ(sidecar.at("task"), "sr");
  EXPECT_EQ(sidecar.at("seed"), 3);
  auto d = ud2m::physics::degradation_from_sidecar(sidecar);
  EXPECT_EQ(d.op->name(), "downsampling");
}

TEST(PhysicsCli, SafetensorsOutputIsTheExactMeasurement) {
  auto dir = ud2m::test::temp_dir();
  auto in = write_photo(dir);
  auto out = dir / "y.safetensors";
  auto r = run_ud2m("degrade --task random_phase_retrieval --sigma 0 --seed 1 --oversampling 2 " + in.string() + " " +
                    out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto file = ud2m::read_safetensors(out.string());
  auto sidecar = nlohmann::json::parse(file.metadata.at("ud2m_sidecar"));
  auto d = ud2m::physics::degradation_from_sidecar(sidecar);
  auto x = ud2m::to_model(ud2m::read_image(in.string()));
  EXPECT_TRUE(torch::equal(file.tensors.at("y"), d.op->forward(x)));
  EXPECT_TRUE(fs::exists(dir / "y.json"));
}

TEST(PhysicsCli, SameSeedSameMeasurement) {
  auto dir = ud2m::test::temp_dir();
  auto in = write_photo(dir);
  for (auto name : {"a.safetensors", "b.safetensors"})
    ASSERT_EQ(run_ud2m("degrade --task inpainting_random --sigma 0.05 --seed 9 " + in.string() + " " +
                       (dir / name).string())
                  .exit_code,
              0);
  auto a = ud2m::read_safetensors((dir / "a.safetensors").string()).tensors.at("y");
  auto b = ud2m::read_safetensors((dir / "b.safetensors").string()).tensors.at("y");
  EXPECT_TRUE(torch::equal(a, b));
}

TEST(PhysicsCli, HelpListsTasksAndDefaults) {
  auto r = run_ud2m("degrade --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const auto& task : ud2m::physics::task_names()) EXPECT_NE(r.output.find(task), std::string::npos) << task;
  for (auto flag : {"--kernel-size", "--boundary", "--factor", "--fraction", "--box-size", "--mask", "--quality",
                    "--oversampling", "--kernel-std", "--filter", "--kernel"})
    EXPECT_NE(r.output.find(flag), std::string::npos) << flag;
}

TEST(PhysicsCli, BadInputsFailCleanly) {
  auto dir = ud2m::test::temp_dir();
  auto in = write_photo(dir).string();
  auto out = dir / "y.png";
  const auto o = " " + out.string();
  expect_clean_failure("degrade --task denoise " + (dir / "missing.png").string() + o, out, "missing.png");
  // Truncated PNG.
  auto bytes = ud2m::read_file(in);
  ud2m::write_file_atomic((dir / "half.png").string(), bytes.substr(0, bytes.size() / 2));
  expect_clean_failure("degrade --task denoise " + (dir / "half.png").string() + o, out, "half.png");
  // Not an image at all.
  ud2m::write_file_atomic((dir / "text.png").string(), "hello, not an image\n");
  expect_clean_failure("degrade --task denoise " + (dir / "text.png").string() + o, out, "text.png");
  // Image smaller than the (default 31×31) motion kernel.
  auto small = dir / "small.png";
  ud2m::write_png(small.string(), torch::rand({1, 3, 16, 16}));
  expect_clean_failure("degrade --task motion_deblur " + small.string() + o, out, "larger than");
  // 30×30 is not divisible by 4.
  auto odd = dir / "odd.png";
  ud2m::write_png(odd.string(), torch::rand({1, 3, 30, 30}));
  expect_clean_failure("degrade --task sr --factor 4 " + odd.string() + o, out, "not divisible");
  // Mask of the wrong size.
  ud2m::write_png((dir / "mask.png").string(), torch::ones({1, 1, 16, 32}));
  expect_clean_failure("degrade --task inpainting_mask --mask " + (dir / "mask.png").string() + " " + in + o, out,
                       "mask");
  expect_clean_failure("degrade --task denoise --sigma -0.1 " + in + o, out, "sigma");
  expect_clean_failure("degrade --task deblur " + in + o, out, "gaussian_deblur");
  expect_clean_failure("degrade --task phase_retrieval " + in + o, out, ".safetensors");
  expect_clean_failure("degrade --task denoise " + in + " " + (dir / "y.bmp").string(), dir / "y.bmp", ".png");
}
