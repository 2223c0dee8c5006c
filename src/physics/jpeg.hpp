// JPEG compression, a nonlinear operator.
//  - measure(): the real codec (libjpeg through core/image.hpp: baseline,
//    YCbCr, 4:2:0, standard tables scaled by quality), then decoded.
//  - forward(): a differentiable model of the same pipeline, used for the
//    likelihood: RGB -> YCbCr (JFIF) -> 2×2 average chroma subsampling ->
//    8×8 DCT -> quantisation with libjpeg's scaled tables (rounding with a
//    straight-through gradient) -> dequantise -> inverse DCT -> fancy (bilinear)
//    chroma upsampling -> RGB. Images whose sides are not multiples of 16 are
//    padded at the bottom/right by repeating the last row/column, as libjpeg
//    does for its partial blocks, and cropped back. Grayscale (C = 1) uses the
//    luma path only. No clipping to [0, 255], so the gradient never vanishes.
#pragma once
#include "physics/operator.hpp"

namespace ud2m::physics {

class JpegCompression : public Operator {
 public:
  explicit JpegCompression(int quality);

  torch::Tensor forward(const torch::Tensor& x) const override;
  torch::Tensor measure(const torch::Tensor& x) const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override { return input_shape; }
  // Through the straight-through rounding the model is linear (RGB -> YCbCr,
  // chroma averaged and re-upsampled, back to RGB), so its norm is one number:
  // 1.175 by power iteration (test), under the 1.752 that the JFIF colour
  // matrix's condition number guarantees. Luma alone is the identity.
  double jacobian_bound() const override { return 1.2; }
  nlohmann::json to_json() const override { return {{"type", name()}, {"quality", quality_}}; }
  std::string name() const override { return "jpeg"; }
  static std::shared_ptr<JpegCompression> from_json(const nlohmann::json& j);

  int quality() const { return quality_; }

 private:
  int quality_;
  torch::Tensor luma_table_, chroma_table_;  // (8, 8) float32 quantisation steps
};

// libjpeg's jpeg_quality_scaling + jpeg_add_quant_table (baseline: steps 1..255).
torch::Tensor jpeg_quant_table(bool chroma, int quality);

}  // namespace ud2m::physics
