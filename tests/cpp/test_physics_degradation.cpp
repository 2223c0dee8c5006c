// Task factory, sidecar round trip and the JSON helpers.
#include <fstream>

#include "core/error.hpp"
#include "core/image.hpp"
#include "io/safetensors.hpp"
#include "physics/degradation.hpp"
#include "physics/serialize.hpp"
#include "test_util.hpp"

using namespace ud2m::physics;

namespace {
// Options for every task, with the files some of them need written into dir.
std::map<std::string, std::map<std::string, std::string>> task_settings(const std::filesystem::path& dir) {
  auto kernel = torch::rand({1, 1, 5, 7});
  ud2m::write_png((dir / "kernel.png").string(), kernel);
  auto mask = (torch::rand({1, 1, 32, 32}) > 0.5).to(torch::kFloat32);
  ud2m::write_png((dir / "mask.png").string(), mask);
  ud2m::write_safetensors((dir / "matrix.safetensors").string(), {{"matrix", torch::randn({50, 32 * 32})}});
  return {
      {"denoise", {}},
      {"gaussian_deblur", {{"kernel-size", "7"}, {"kernel-std", "2"}}},
      {"uniform_deblur", {{"boundary", "reflect"}}},
      {"motion_deblur", {{"kernel-size", "9"}, {"boundary", "valid"}}},
      {"kernel_deblur", {{"kernel", (dir / "kernel.png").string()}}},
      {"sr", {{"factor", "2"}, {"filter", "gaussian"}}},
      {"inpainting_random", {{"fraction", "0.5"}}},
      {"inpainting_box", {{"box-size", "10x12"}}},
      {"inpainting_mask", {{"mask", (dir / "mask.png").string()}}},
      {"jpeg", {{"quality", "20"}}},
      {"phase_retrieval", {{"oversampling", "2"}}},
      {"random_phase_retrieval", {}},
      {"matrix", {{"matrix", (dir / "matrix.safetensors").string()}, {"image-size", "32"}}},
  };
}
}  // namespace

TEST(PhysicsDegradation, EveryTaskRoundTripsThroughItsSidecar) {
  auto dir = ud2m::test::temp_dir();
  auto settings = task_settings(dir);
  ASSERT_EQ(settings.size(), task_names().size());
  auto x = torch::rand({2, 3, 32, 32}) * 2 - 1;
  for (const auto& task : task_names()) {
    ASSERT_TRUE(settings.count(task)) << task;
    auto d = make_degradation({task, 0.02, 17, settings.at(task)}, {2, 3, 32, 32});
    // Through text, as the CLI stores it.
    auto again = degradation_from_sidecar(nlohmann::json::parse(d.sidecar.dump()));
    EXPECT_EQ(again.noise.sigma, 0.02);
    auto y = d.op->measure(x), y2 = again.op->measure(x);
    EXPECT_TRUE(torch::equal(y, y2)) << task;
    EXPECT_TRUE(torch::equal(d.op->forward(x), again.op->forward(x))) << task;
    EXPECT_EQ(d.sidecar.at("measurement_shape").get<std::vector<int64_t>>(), y.sizes().vec()) << task;
    EXPECT_EQ(d.sidecar.at("operator"), again.op->to_json()) << task;
  }
}

// A measurement made elsewhere, described by its task: the image size (SR,
// 'valid' blurs) and the operator are recovered from the measurement's size alone.
TEST(PhysicsDegradation, ATaskAndAMeasurementSizeGiveBackTheOperator) {
  auto dir = ud2m::test::temp_dir();
  auto settings = task_settings(dir);
  settings["sr"] = {{"factor", "4"}};
  settings["gaussian_deblur"]["boundary"] = "valid";
  for (const auto& task : task_names()) {
    if (task.find("phase_retrieval") != std::string::npos) continue;  // measures a spectrum, not an image
    for (std::vector<int64_t> image : {std::vector<int64_t>{1, 3, 32, 32}, {1, 3, 44, 36}}) {
      if ((task == "inpainting_mask" || task == "matrix") && image[2] != 32) continue;  // files for 32x32
      auto made = make_degradation({task, 0.02, 0, settings.at(task)}, image);
      auto measured = made.sidecar.at("measurement_shape").get<std::vector<int64_t>>();
      auto described = degradation_for_measurement({task, 0.02, 0, settings.at(task)}, measured);
      EXPECT_EQ(described.sidecar.at("input_shape").get<std::vector<int64_t>>(), image) << task;
      EXPECT_EQ(described.sidecar.at("operator"), made.sidecar.at("operator")) << task;
    }
  }
  EXPECT_THROW_MSG(degradation_for_measurement({"phase_retrieval", 0.02, 0, {}}, {1, 3, 19, 25}),
                   "does not produce a 1x3x19x25 measurement");
}

// The declared seeded tasks are exactly those whose operator changes with the seed.
TEST(PhysicsDegradation, TasksThatDrawFromTheSeedAreDeclaredSo) {
  auto dir = ud2m::test::temp_dir();
  auto settings = task_settings(dir);
  auto x = torch::rand({1, 3, 32, 32}) * 2 - 1;
  for (const auto& task : task_names()) {
    auto a = make_degradation({task, 0, 1, settings.at(task)}, {1, 3, 32, 32});
    auto b = make_degradation({task, 0, 2, settings.at(task)}, {1, 3, 32, 32});
    EXPECT_EQ(!torch::equal(a.op->forward(x), b.op->forward(x)), task_draws_from_seed(task)) << task;
  }
  EXPECT_THROW_MSG(task_draws_from_seed("blur"), "unknown task 'blur'");
}

TEST(PhysicsDegradation, SeedsDecideTheRandomParts) {
  auto a = make_degradation({"inpainting_random", 0, 1, {}}, {1, 3, 16, 16});
  auto b = make_degradation({"inpainting_random", 0, 1, {}}, {1, 3, 16, 16});
  auto c = make_degradation({"inpainting_random", 0, 2, {}}, {1, 3, 16, 16});
  EXPECT_EQ(a.sidecar, b.sidecar);
  EXPECT_NE(a.sidecar.at("operator"), c.sidecar.at("operator"));
  auto m = make_degradation({"motion_deblur", 0, 5, {}}, {1, 3, 64, 64});
  auto n = make_degradation({"motion_deblur", 0, 6, {}}, {1, 3, 64, 64});
  EXPECT_NE(m.sidecar.at("operator"), n.sidecar.at("operator"));
  // Exactly 70 % of the pixels are missing by default.
  auto x = torch::ones({1, 1, 16, 16});
  EXPECT_EQ(a.op->forward(x).sum().item<double>(), double(256 - std::llround(0.7 * 256)));
}

TEST(PhysicsDegradation, UserErrorsAreClear) {
  auto message = [](const TaskSpec& spec, std::vector<int64_t> shape = {1, 3, 32, 32}) {
    try {
      make_degradation(spec, shape);
    } catch (const ud2m::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({"deblur", 0, 0, {}}).find("valid: denoise, gaussian_deblur"), std::string::npos);
  EXPECT_NE(message({"denoise", -0.1, 0, {}}).find("sigma"), std::string::npos);
  EXPECT_NE(message({"sr", 0, 0, {{"factor", "3"}}}).find("not divisible"), std::string::npos);
  EXPECT_NE(message({"gaussian_deblur", 0, 0, {{"kernel-size", "40"}}}).find("larger than"), std::string::npos);
  EXPECT_NE(message({"motion_deblur", 0, 0, {}}, {1, 3, 16, 16}).find("larger than"), std::string::npos);
  EXPECT_NE(message({"denoise", 0, 0, {{"factor", "2"}}}).find("does not apply"), std::string::npos);
  EXPECT_NE(message({"jpeg", 0, 0, {{"quality", "abc"}}}).find("--quality must be an integer"), std::string::npos);
  EXPECT_NE(message({"kernel_deblur", 0, 0, {}}).find("needs --kernel"), std::string::npos);
  EXPECT_NE(message({"gaussian_deblur", 0, 0, {{"boundary", "wrap"}}}).find("boundary"), std::string::npos);
  auto dir = ud2m::test::temp_dir();
  ud2m::write_png((dir / "mask.png").string(), torch::ones({1, 1, 16, 8}));
  EXPECT_NE(message({"inpainting_mask", 0, 0, {{"mask", (dir / "mask.png").string()}}}).find("16x8"),
            std::string::npos);
  EXPECT_THROW(degradation_from_sidecar({{"format_version", 99}}), ud2m::Error);
  EXPECT_THROW(degradation_from_sidecar({{"format_version", 1}, {"sigma", 0}, {"operator", {{"type", "x"}}}}),
               ud2m::Error);
}

TEST(PhysicsDegradation, KernelFromSafetensors) {
  auto dir = ud2m::test::temp_dir();
  auto k = torch::rand({3, 5});
  ud2m::write_safetensors((dir / "k.safetensors").string(), {{"kernel", k}});
  auto d = make_degradation({"kernel_deblur", 0, 0, {{"kernel", (dir / "k.safetensors").string()}}}, {1, 1, 8, 8});
  auto stored = tensor_from_json(d.sidecar["operator"]["kernel"], "kernel");
  EXPECT_LE(ud2m::test::max_rel_error(stored, k / k.sum()), 1e-6);
}

TEST(PhysicsSerialize, Base64AndMasksRoundTrip) {
  for (const std::string& s : std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)})
    EXPECT_EQ(base64_decode(base64_encode(s)), s);
  EXPECT_EQ(base64_encode("Man"), "TWFu");
  auto mask = (torch::rand({13, 7}) > 0.3).to(torch::kFloat32);
  EXPECT_TRUE(torch::equal(mask_from_json(mask_to_json(mask)), mask));
  auto t = torch::randn({3, 4});
  EXPECT_TRUE(torch::equal(tensor_from_json(nlohmann::json::parse(tensor_to_json(t).dump()), "t"), t));
}

TEST(PhysicsDegradation, CompositionRoundTrips) {
  auto blur = make_degradation({"gaussian_deblur", 0, 0, {}}, {1, 3, 16, 16}).op;
  auto mask = make_degradation({"inpainting_random", 0, 4, {}}, {1, 3, 16, 16}).op;
  nlohmann::json j = {{"type", "composition"}, {"outer", mask->to_json()}, {"inner", blur->to_json()}};
  auto op = operator_from_json(nlohmann::json::parse(j.dump()));
  EXPECT_EQ(op->to_json(), j);
  auto x = torch::randn({1, 3, 16, 16});
  EXPECT_TRUE(torch::equal(op->forward(x), mask->forward(blur->forward(x))));
  // Only linear operators compose.
  j["inner"] = make_degradation({"jpeg", 0, 0, {}}, {1, 3, 16, 16}).op->to_json();
  EXPECT_THROW(operator_from_json(j), ud2m::Error);
}
