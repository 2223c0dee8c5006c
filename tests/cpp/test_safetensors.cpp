#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "io/safetensors.hpp"
#include "test_util.hpp"

using namespace ud2m;

TEST(Safetensors, RoundTripKeepsDtypesShapesAndMetadata) {
  auto dir = test::temp_dir();
  TensorMap tensors{{"w", torch::randn({3, 4})},
                    {"h", torch::randn({5}).to(torch::kBFloat16)},
                    {"i", torch::arange(7)},
                    {"b", torch::tensor({true, false})},
                    {"empty", torch::zeros({0, 3})}};
  write_safetensors((dir / "m.safetensors").string(), tensors, {{"arch", "{\"name\":\"adm\"}"}});
  auto file = read_safetensors((dir / "m.safetensors").string());
  ASSERT_EQ(file.tensors.size(), tensors.size());
  for (auto& [name, t] : tensors) {
    EXPECT_EQ(file.tensors.at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(file.tensors.at(name), t)) << name;
  }
  EXPECT_EQ(file.metadata.at("arch"), "{\"name\":\"adm\"}");
}

TEST(Safetensors, ReadsFilesWrittenByPython) {
  auto path = test::refs_dir("safetensors") / "python.safetensors";
  auto file = read_safetensors(path.string());
  EXPECT_EQ(file.metadata.at("format"), "pt");
  auto expected = torch::arange(24, torch::kFloat32).view({2, 3, 4}) / 7;
  EXPECT_TRUE(torch::equal(file.tensors.at("a.weight"), expected));
  EXPECT_TRUE(torch::equal(file.tensors.at("half"), expected.to(torch::kFloat16)));
  EXPECT_TRUE(torch::equal(file.tensors.at("bf16"), expected.to(torch::kBFloat16)));
  EXPECT_TRUE(torch::equal(file.tensors.at("long"), torch::arange(5)));
}

TEST(Safetensors, TruncatedFileIsRefused) {
  auto bytes = serialize_safetensors({{"w", torch::randn({64})}});
  EXPECT_THROW(parse_safetensors(bytes.substr(0, bytes.size() - 4), "t"), Error);
  EXPECT_THROW(parse_safetensors(bytes.substr(0, 6), "t"), Error);
  auto garbage = bytes;
  garbage[8] = '!';
  EXPECT_THROW(parse_safetensors(garbage, "t"), Error);
}
