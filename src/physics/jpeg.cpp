#include "physics/jpeg.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "core/image.hpp"
#include "physics/serialize.hpp"

namespace ud2m::physics {

namespace {
// ITU-T T.81 Annex K tables, the base of every libjpeg quality setting.
const int kLuma[64] = {16, 11, 10, 16, 24,  40,  51,  61,  12, 12, 14, 19, 26,  58,  60,  55,
                       14, 13, 16, 24, 40,  57,  69,  56,  14, 17, 22, 29, 51,  87,  80,  62,
                       18, 22, 37, 56, 68,  109, 103, 77,  24, 35, 55, 64, 81,  104, 113, 92,
                       49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99};
const int kChroma[64] = {17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99,
                         99, 99, 47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
                         99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99};

// Orthonormal 8-point DCT-II matrix: JPEG's 2-D DCT is D·B·Dᵀ.
torch::Tensor dct_matrix(torch::ScalarType dtype, torch::Device device) {
  auto d = torch::empty({8, 8}, torch::kFloat64);
  for (int u = 0; u < 8; ++u)
    for (int n = 0; n < 8; ++n)
      d[u][n] = (u == 0 ? std::sqrt(1.0 / 8) : std::sqrt(2.0 / 8)) * std::cos((2 * n + 1) * u * M_PI / 16);
  return d.to(device, dtype);
}

// (N, H, W) -> (N, H/8, W/8, 8, 8) and back.
torch::Tensor to_blocks(const torch::Tensor& p) {
  return p.reshape({p.size(0), p.size(1) / 8, 8, p.size(2) / 8, 8}).permute({0, 1, 3, 2, 4});
}
torch::Tensor from_blocks(const torch::Tensor& b) {
  return b.permute({0, 1, 3, 2, 4}).reshape({b.size(0), b.size(1) * 8, b.size(2) * 8});
}

// Round with an identity gradient (straight-through), so the surrogate is differentiable.
torch::Tensor ste_round(const torch::Tensor& v) { return v + (torch::round(v) - v).detach(); }

// Lossy part of JPEG on one level-shifted plane (N, H, W), H and W multiples of 8.
torch::Tensor quantise_plane(const torch::Tensor& plane, const torch::Tensor& table) {
  auto D = dct_matrix(plane.scalar_type(), plane.device());
  auto Q = table.to(plane.device(), plane.scalar_type());
  auto coef = torch::matmul(torch::matmul(D, to_blocks(plane)), D.t());
  auto restored = ste_round(coef / Q) * Q;
  return from_blocks(torch::matmul(torch::matmul(D.t(), restored), D));
}

torch::Tensor pad_to_16(const torch::Tensor& x) {
  const int64_t ph = (16 - x.size(2) % 16) % 16, pw = (16 - x.size(3) % 16) % 16;
  if (ph == 0 && pw == 0) return x;
  return torch::nn::functional::pad(x, torch::nn::functional::PadFuncOptions({0, pw, 0, ph}).mode(torch::kReplicate));
}
}  // namespace

torch::Tensor jpeg_quant_table(bool chroma, int quality) {
  const int scale = quality < 50 ? 5000 / quality : 200 - 2 * quality;
  auto t = torch::empty({8, 8}, torch::kFloat32);
  for (int i = 0; i < 64; ++i) {
    long step = ((chroma ? kChroma[i] : kLuma[i]) * long(scale) + 50) / 100;
    t[i / 8][i % 8] = float(std::clamp(step, 1L, 255L));
  }
  return t;
}

JpegCompression::JpegCompression(int quality) : quality_(quality) {
  UD2M_CHECK(quality >= 1 && quality <= 100, "JPEG quality must be in 1..100, not {}", quality);
  luma_table_ = jpeg_quant_table(false, quality);
  chroma_table_ = jpeg_quant_table(true, quality);
}

torch::Tensor JpegCompression::forward(const torch::Tensor& x) const {
  UD2M_CHECK(x.dim() == 4 && (x.size(1) == 1 || x.size(1) == 3),
             "JPEG needs 1- or 3-channel images, not input of shape {}", x.sizes().vec());
  const int64_t H = x.size(2), W = x.size(3);
  auto p = pad_to_16((x + 1) * 127.5);  // model units -> 0..255
  if (p.size(1) == 1) {
    auto y = quantise_plane(p.select(1, 0) - 128, luma_table_) + 128;
    return (y.unsqueeze(1) / 127.5 - 1).slice(2, 0, H).slice(3, 0, W);
  }
  auto r = p.select(1, 0), g = p.select(1, 1), b = p.select(1, 2);
  auto luma = 0.299 * r + 0.587 * g + 0.114 * b;
  auto cb = -0.168735892 * r - 0.331264108 * g + 0.5 * b;  // already centred on 0 (JFIF's +128 −128)
  auto cr = 0.5 * r - 0.418687589 * g - 0.081312411 * b;
  auto half = [](const torch::Tensor& c) { return torch::avg_pool2d(c.unsqueeze(1), {2, 2}).squeeze(1); };
  auto up = [](const torch::Tensor& c) {
    // libjpeg's "fancy" upsampling weights the nearer sample 3/4 and the farther 1/4: bilinear ×2.
    namespace F = torch::nn::functional;
    return F::interpolate(c.unsqueeze(1), F::InterpolateFuncOptions()
                                               .scale_factor(std::vector<double>{2.0, 2.0})
                                               .mode(torch::kBilinear)
                                               .align_corners(false))
        .squeeze(1);
  };
  auto Y = quantise_plane(luma - 128, luma_table_) + 128;
  auto Cb = up(quantise_plane(half(cb), chroma_table_));
  auto Cr = up(quantise_plane(half(cr), chroma_table_));
  auto rgb = torch::stack({Y + 1.402 * Cr, Y - 0.344136286 * Cb - 0.714136286 * Cr, Y + 1.772 * Cb}, 1);
  return (rgb / 127.5 - 1).slice(2, 0, H).slice(3, 0, W);
}

torch::Tensor JpegCompression::measure(const torch::Tensor& x) const {
  UD2M_CHECK(x.dim() == 4 && (x.size(1) == 1 || x.size(1) == 3),
             "JPEG needs 1- or 3-channel images, not input of shape {}", x.sizes().vec());
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  auto cpu = from_model(x.detach()).to(torch::kCPU, torch::kFloat32).clamp(0, 1);
  for (int64_t i = 0; i < x.size(0); ++i) {
    auto bytes = encode_jpeg(cpu[i], quality_);
    out.push_back(decode_image(bytes, "the JPEG measurement", int(x.size(1))));
  }
  return to_model(torch::cat(out, 0)).to(x.device(), x.scalar_type());
}

std::shared_ptr<JpegCompression> JpegCompression::from_json(const nlohmann::json& j) {
  return std::make_shared<JpegCompression>(int(json_get<int64_t>(j, "quality", "jpeg")));
}

}  // namespace ud2m::physics
