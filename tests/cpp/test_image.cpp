#include <filesystem>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/image.hpp"
#include "test_util.hpp"

using namespace ud2m;

TEST(Image, Png8RoundTripIsExact) {
  auto dir = test::temp_dir();
  auto x = torch::randint(0, 256, {1, 3, 17, 23}).to(torch::kFloat32) / 255;
  write_png((dir / "a.png").string(), x);
  auto y = read_image((dir / "a.png").string());
  EXPECT_TRUE(torch::equal(x, y));
}

TEST(Image, Png16RoundTripIsExact) {
  auto dir = test::temp_dir();
  auto x = torch::randint(0, 65536, {1, 3, 9, 11}).to(torch::kFloat64) / 65535;
  write_png((dir / "a.png").string(), x.to(torch::kFloat32), 16);
  auto y = read_image((dir / "a.png").string());
  EXPECT_LT((x.to(torch::kFloat32) - y).abs().max().item<float>(), 1e-7);
}

TEST(Image, GrayExpandsToRgbOrStaysGray) {
  auto dir = test::temp_dir();
  auto x = torch::rand({1, 1, 8, 8});
  write_png((dir / "g.png").string(), x);
  EXPECT_EQ(read_image((dir / "g.png").string()).size(1), 3);
  EXPECT_EQ(read_image((dir / "g.png").string(), 0).size(1), 1);
}

TEST(Image, JpegRoundTripIsClose) {
  auto dir = test::temp_dir();
  auto x = torch::linspace(0, 1, 64).view({1, 1, 1, 64}).expand({1, 3, 64, 64}).contiguous();
  write_file_atomic((dir / "a.jpg").string(), encode_jpeg(x, 95));
  auto y = read_image((dir / "a.jpg").string());
  EXPECT_LT((x - y).abs().mean().item<float>(), 0.01);
}

TEST(Image, TruncatedOrForeignFilesAreRefused) {
  auto dir = test::temp_dir();
  auto png = encode_png(torch::rand({1, 3, 32, 32}));
  write_file_atomic((dir / "t.png").string(), png.substr(0, png.size() / 2));
  EXPECT_THROW(read_image((dir / "t.png").string()), Error);
  auto jpg = encode_jpeg(torch::rand({1, 3, 32, 32}), 90);
  write_file_atomic((dir / "t.jpg").string(), jpg.substr(0, jpg.size() / 2));
  EXPECT_THROW(read_image((dir / "t.jpg").string()), Error);
  write_file_atomic((dir / "x.png").string(), "GIF89a not an image");
  EXPECT_THROW(read_image((dir / "x.png").string()), Error);
  EXPECT_THROW(read_image((dir / "missing.png").string()), Error);
}

TEST(Image, FailedWriteLeavesNoFile) {
  auto dir = test::temp_dir();
  auto nan = torch::full({1, 3, 4, 4}, NAN);
  EXPECT_THROW(write_png((dir / "nan.png").string(), nan), Error);
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  EXPECT_THROW(write_png((dir / "no_such_dir" / "a.png").string(), torch::rand({1, 3, 4, 4})), Error);
}

TEST(AtomicFile, UncommittedWriteLeavesNothing) {
  auto dir = test::temp_dir();
  {
    AtomicFile file((dir / "f.bin").string());
    file.write("abc", 3);
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}
