// `ud2m info` on files of each format.
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "test_util.hpp"

using namespace ud2m;

namespace {
std::string ref(const std::string& name) { return (test::refs_dir("checkpoints") / name).string(); }
}  // namespace

TEST(InfoCommand, ListsTensorsParametersAndMetadata) {
  auto r = test::run_ud2m("info " + ref("lightning.ckpt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("torch.save (zip)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("state_dict.module.conv.weight"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[4, 3, 3, 3]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("float16"), std::string::npos) << r.output;
  // 108 + 4 + 4 + 1 + 0 model weights + 3 optimizer values
  EXPECT_NE(r.output.find("parameters: 120"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("epoch: 3"), std::string::npos) << r.output;
}

TEST(InfoCommand, WeightsFlagShowsTheModelOnly) {
  auto r = test::run_ud2m("info --weights " + ref("lightning.ckpt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("  conv.weight"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("exp_avg"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("parameters: 117"), std::string::npos) << r.output;
}

TEST(InfoCommand, KeepObjectsReadsPickledModules) {
  auto refused = test::run_ud2m("info " + ref("module.pt"));
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("torch.nn.modules.linear.Linear"), std::string::npos) << refused.output;
  auto r = test::run_ud2m("info --keep-objects " + ref("module.pt"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("_parameters.weight"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("parameters: 8"), std::string::npos) << r.output;
  auto evil = test::run_ud2m("info --keep-objects " + ref("evil_torch_zip.pt"));
  EXPECT_NE(evil.exit_code, 0);
  EXPECT_NE(evil.output.find("posix.system"), std::string::npos) << evil.output;
}

TEST(InfoCommand, JsonOutput) {
  for (auto file : {"legacy.pt", "plain.expected.safetensors"}) {
    auto r = test::run_command(test::ud2m_binary() + " info --json " + ref(file) + " 2>/dev/null");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto j = nlohmann::json::parse(r.output);
    EXPECT_EQ(j["file"], ref(file));
    EXPECT_GT(j["parameters"].get<int64_t>(), 0);
    EXPECT_FALSE(j["tensors"].empty());
    EXPECT_TRUE(j["tensors"][0].contains("shape"));
  }
  auto j = nlohmann::json::parse(test::run_command(test::ud2m_binary() + " info --json " + ref("legacy.pt")).output);
  EXPECT_EQ(j["format"], "torch.save (legacy)");
  EXPECT_EQ(j["metadata"]["epoch"], "12");
}

TEST(InfoCommand, TruncatedOrMaliciousFilesFailClearly) {
  auto dir = test::temp_dir();
  auto bytes = read_file(ref("plain.pt"));
  write_file_atomic((dir / "cut.pt").string(), bytes.substr(0, bytes.size() / 2));
  auto r = test::run_ud2m("info " + (dir / "cut.pt").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("cut.pt"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("truncated"), std::string::npos) << r.output;
  r = test::run_ud2m("info " + ref("evil_torch_zip.pt"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("posix.system"), std::string::npos) << r.output;
  r = test::run_ud2m("info --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("--json"), std::string::npos) << r.output;
}
