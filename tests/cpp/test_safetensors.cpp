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

TEST(Safetensors, ReaderChecksTheFileAndReadsOneTensorAtATime) {
  auto dir = test::temp_dir();
  const auto path = (dir / "m.safetensors").string();
  TensorMap tensors{{"a", torch::randn({4, 5})}, {"b", torch::arange(6).to(torch::kBFloat16)}};
  write_safetensors(path, tensors, {{"k", "v"}});
  SafetensorsReader reader(path);
  EXPECT_EQ(reader.metadata().at("k"), "v");
  EXPECT_EQ(reader.layout().at("a").sizes(), torch::IntArrayRef({4, 5}));
  EXPECT_TRUE(reader.layout().at("a").is_meta());  // shapes only, no data held
  EXPECT_TRUE(torch::equal(reader.read("b"), tensors.at("b")));
  EXPECT_TRUE(torch::equal(reader.read("a"), tensors.at("a")));
  EXPECT_THROW_MSG(reader.read("c"), "has no tensor 'c'");
  // The same checks as for bytes in memory: a truncated file or a folder is refused by name.
  const auto bytes = read_file(path);
  write_file_atomic((dir / "cut.safetensors").string(), bytes.substr(0, bytes.size() - 8));
  EXPECT_THROW_MSG(SafetensorsReader((dir / "cut.safetensors").string()), "lies outside the file");
  EXPECT_THROW_MSG(SafetensorsReader(dir.string()), "is a folder");
  EXPECT_THROW_MSG(SafetensorsReader((dir / "missing.safetensors").string()), "cannot open");
}
