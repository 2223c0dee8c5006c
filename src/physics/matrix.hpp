// A forward model given as a matrix: the user's own linear operator
// (compressed sensing, tomography, a measured system matrix), y = A·vec(x).
//
// A (M × N) acts on each channel alike when N = H·W, and on the whole image
// when N = C·H·W; vec is row-major over (H, W), resp. (C, H, W), as
// NumPy's and PyTorch's reshape. Measurements are (batch, C, 1, M), resp.
// (batch, 1, 1, M). A is dense, or sparse (COO) for large systems.
//
// Like every operator it works in model units (x in [−1, 1]). Its
// measurement files hold what an instrument records of an image v in
// [0, 1], y = A·v; since x = 2v − 1 that is y_model = 2y − A·1
// (measurement_to_model / measurement_from_model).
#pragma once
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "physics/operator.hpp"

namespace ud2m::physics {

// A = U·diag(s)·Vᵀ, thin (K = min(M, N) columns), in float32.
struct MatrixDecomposition {
  torch::Tensor u, s, v;  // (M, K), (K), (N, K)
};

class MatrixOperator : public LinearOperator {
 public:
  // Matrices up to this many entries are decomposed (once, on first need, in
  // float64: seconds for 2,500 x 4,096): exact prox and A† then, and DDRM.
  // Larger ones are solved by conjugate gradients and have no DDRM.
  static constexpr int64_t kMaxDecomposedEntries = 25'000'000;

  // matrix: (M, N) float, dense or sparse COO; image_shape: (C, H, W). Its
  // sidecar holds the values (keep such matrices small).
  MatrixOperator(torch::Tensor matrix, std::vector<int64_t> image_shape);
  // A matrix file (load_matrix_file); the sidecar names the file and its
  // fingerprint, and refuses to rebuild from a file that has changed since.
  static std::shared_ptr<MatrixOperator> from_file(const std::string& path, std::vector<int64_t> image_shape);

  torch::Tensor forward(const torch::Tensor& x) const override;
  torch::Tensor adjoint(const torch::Tensor& y) const override;
  // Closed forms through the decomposition where there is one, CG otherwise.
  torch::Tensor prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const override;
  torch::Tensor pinv(const torch::Tensor& y) const override;
  bool has_closed_form_prox() const override { return decomposition() != nullptr; }
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  nlohmann::json to_json() const override;
  std::string name() const override { return "matrix"; }
  static std::shared_ptr<MatrixOperator> from_json(const nlohmann::json& j);

  const torch::Tensor& matrix() const { return matrix_; }
  bool per_channel() const { return per_channel_; }
  const std::vector<int64_t>& image_shape() const { return image_shape_; }
  // The SVD of A, or nullptr above kMaxDecomposedEntries.
  const MatrixDecomposition* decomposition() const;
  int64_t rows() const { return matrix_.size(0); }

 private:
  // Images as rows of A's input, (rows, N), and back; measurements from rows, (rows, M).
  torch::Tensor image_rows(const torch::Tensor& x) const;
  torch::Tensor image_from_rows(const torch::Tensor& rows, int64_t batch) const;
  torch::Tensor measurement_from_rows(const torch::Tensor& rows, int64_t batch) const;

  torch::Tensor matrix_, transposed_;  // (M, N) and Aᵀ (N, M), float32
  std::vector<int64_t> image_shape_;
  bool per_channel_;
  std::string file_, fingerprint_;
  mutable std::once_flag decomposed_;
  mutable std::unique_ptr<MatrixDecomposition> decomposition_;
};

// A matrix file: safetensors holding `matrix` (M, N), or a sparse one as
// `indices` (2, nnz) integer row/column pairs, `values` (nnz) and `shape` (2).
torch::Tensor load_matrix_file(const std::string& path);
// The number of columns N of a matrix file.
int64_t matrix_file_columns(const std::string& path);
// A measurement folder moved with its matrix file: where the path a sidecar
// recorded no longer exists but a file of that name in `folder` does, the
// sidecar is pointed there (its fingerprint is still checked on loading).
void find_moved_matrix(nlohmann::json& sidecar, const std::string& folder);

// Measurement files of a matrix operator hold y = A·v of [0, 1] images; the
// samplers see model units. Other operators' files are already in model
// units (or images, converted where they are read): returned unchanged.
torch::Tensor measurement_to_model(const Operator& op, const torch::Tensor& y);
torch::Tensor measurement_from_model(const Operator& op, const torch::Tensor& y);

}  // namespace ud2m::physics
