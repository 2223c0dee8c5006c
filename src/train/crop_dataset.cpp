#include "train/crop_dataset.hpp"

#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "core/image.hpp"
#include "core/paths.hpp"

namespace ud2m::train {
namespace fs = std::filesystem;

namespace {
bool is_image_name(const std::string& name) {
  return has_extension(name, ".png") || has_extension(name, ".jpg") || has_extension(name, ".jpeg");
}
}  // namespace

std::vector<std::string> list_images(const std::string& source) {
  std::vector<std::string> paths;
  if (fs::is_directory(source)) {
    for (auto& entry : fs::recursive_directory_iterator(source))
      if (entry.is_regular_file() && is_image_name(entry.path().string())) paths.push_back(entry.path().string());
    std::sort(paths.begin(), paths.end());
  } else if (is_image_name(source)) {
    paths.push_back(source);  // a single photograph
  } else {
    std::ifstream in(source);
    UD2M_CHECK(in, "cannot open the image list or folder '{}'", source);
    for (std::string line; std::getline(in, line);) {
      line.erase(0, line.find_first_not_of(" \t"));
      line.erase(line.find_last_not_of(" \t\r") + 1);
      if (!line.empty() && line[0] != '#') paths.push_back(line);
    }
  }
  UD2M_CHECK(!paths.empty(), "'{}' lists no images", source);
  return paths;
}

CropDataset::CropDataset(const std::vector<std::string>& paths, int crop, int levels) : crop_(crop) {
  UD2M_CHECK(crop >= 8, "the crop size must be at least 8, not {}", crop);
  namespace F = torch::nn::functional;
  for (auto& path : paths) {
    auto image = read_image(path);  // (1, 3, H, W) in [0, 1]
    const int64_t short_side = std::min(image.size(2), image.size(3));
    UD2M_CHECK(short_side >= crop, "'{}' ({}x{}) is smaller than the {}-pixel crop", path, image.size(3),
               image.size(2), crop);
    for (int k = 0; k < levels; ++k) {
      const int64_t target = static_cast<int64_t>(crop) << k;
      if (target > short_side) break;
      const double scale = static_cast<double>(target) / short_side;
      std::vector<int64_t> size{std::max<int64_t>(crop, std::llround(image.size(2) * scale)),
                                std::max<int64_t>(crop, std::llround(image.size(3) * scale))};
      auto resized = target == short_side
                         ? image
                         : F::interpolate(image, F::InterpolateFuncOptions().size(size).mode(torch::kBilinear)
                                                     .align_corners(false).antialias(true));
      images_.push_back(resized[0].clamp(0, 1).mul(255).round().to(torch::kUInt8).contiguous());
    }
    ++photos_;
  }
}

torch::Tensor CropDataset::batch(int n, torch::Generator& rng) const {
  std::vector<torch::Tensor> crops;
  auto draw = [&](int64_t high) { return at::randint(high, {1}, rng, torch::kLong).item<int64_t>(); };
  for (int i = 0; i < n; ++i) {
    // Uniform over (photo, scale) pairs: every photo has the same levels unless it is small.
    const auto& image = images_[draw(static_cast<int64_t>(images_.size()))];
    const int64_t top = draw(image.size(1) - crop_ + 1), left = draw(image.size(2) - crop_ + 1);
    auto c = image.narrow(1, top, crop_).narrow(2, left, crop_);
    if (draw(2)) c = c.flip({2});
    c = torch::rot90(c, draw(4), {1, 2});
    crops.push_back(c);
  }
  return torch::stack(crops).to(torch::kFloat32).div(127.5).sub(1);
}

}  // namespace ud2m::train
