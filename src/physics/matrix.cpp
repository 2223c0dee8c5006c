#include "physics/matrix.hpp"

#include <torch/torch.h>

#include <filesystem>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "io/safetensors.hpp"
#include "physics/serialize.hpp"

namespace ud2m::physics {
namespace {

// FNV-1a (64 bit) of a file's bytes: enough to tell that it changed.
std::string fingerprint(const std::string& bytes) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char b : bytes) hash = (hash ^ b) * 1099511628211ull;
  return fmt::format("fnv1a64:{:016x}", hash);
}

torch::Tensor sparse_matrix(const TensorMap& t, const std::string& path) {
  for (const char* key : {"indices", "values", "shape"})
    UD2M_CHECK(t.count(key), "the sparse matrix file '{}' lacks '{}' (it needs indices, values and shape)", path, key);
  auto indices = t.at("indices"), values = t.at("values"), shape = t.at("shape");
  UD2M_CHECK(!indices.is_floating_point() && indices.dim() == 2 && indices.size(0) == 2,
             "'{}': indices must be integer (2, nnz) row/column pairs, not {} {}", path,
             c10::toString(indices.scalar_type()), fmt::join(indices.sizes(), "x"));
  UD2M_CHECK(values.dim() == 1 && values.size(0) == indices.size(1), "'{}': {} values for {} index pairs", path,
             values.numel(), indices.size(1));
  UD2M_CHECK(!shape.is_floating_point() && shape.numel() == 2, "'{}': shape must be two integers", path);
  const int64_t rows = shape[0].item<int64_t>(), columns = shape[1].item<int64_t>();
  indices = indices.to(torch::kLong);
  UD2M_CHECK(rows > 0 && columns > 0, "'{}': the matrix shape {}x{} is empty", path, rows, columns);
  if (indices.numel() > 0) {
    UD2M_CHECK(indices.min().item<int64_t>() >= 0 && indices[0].max().item<int64_t>() < rows &&
                   indices[1].max().item<int64_t>() < columns,
               "'{}': an index lies outside the {}x{} matrix", path, rows, columns);
  }
  return torch::sparse_coo_tensor(indices, values.to(torch::kFloat32), {rows, columns}).coalesce();
}

void check_extension(const std::string& path) {
  UD2M_CHECK(path.size() >= 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0,
             "a matrix file is a .safetensors file ('matrix', or sparse 'indices', 'values', 'shape'), not '{}'", path);
}

torch::Tensor matrix_of(const TensorMap& tensors, const std::string& path) {
  if (tensors.count("matrix")) return tensors.at("matrix");
  if (tensors.count("indices")) return sparse_matrix(tensors, path);
  fail("'{}' holds no 'matrix' (dense) nor 'indices', 'values' and 'shape' (sparse)", path);
}

torch::Tensor values_of(const torch::Tensor& matrix) { return matrix.is_sparse() ? matrix._values() : matrix; }

// A·1: what a white image measures, in model units; broadcasts over a batch.
torch::Tensor measurement_of_ones(const MatrixOperator& op) {
  const auto& s = op.image_shape();
  return op.forward(torch::ones({1, s[0], s[1], s[2]}));
}

}  // namespace

MatrixOperator::MatrixOperator(torch::Tensor matrix, std::vector<int64_t> image_shape)
    : image_shape_(std::move(image_shape)) {
  UD2M_CHECK(matrix.dim() == 2, "a matrix operator needs a 2-D matrix, not one of shape {}",
             fmt::join(matrix.sizes(), "x"));
  UD2M_CHECK(image_shape_.size() == 3, "a matrix operator's image shape is (C, H, W), not {}",
             fmt::join(image_shape_, "x"));
  matrix_ = matrix.is_sparse() ? matrix.to(torch::kFloat32).coalesce() : matrix.to(torch::kFloat32).contiguous();
  UD2M_CHECK(torch::isfinite(values_of(matrix_)).all().item<bool>(), "the matrix has non-finite values");
  transposed_ = matrix_.is_sparse() ? matrix_.t().coalesce() : matrix_.t();  // dense: a view (BLAS transposes)
  const int64_t c = image_shape_[0], pixels = image_shape_[1] * image_shape_[2], columns = matrix_.size(1);
  UD2M_CHECK(columns == pixels || columns == c * pixels,
             "the matrix has {} columns, but a {}x{}x{} image has {} pixels per channel and {} values in all",
             columns, c, image_shape_[1], image_shape_[2], pixels, c * pixels);
  per_channel_ = columns == pixels;
}

std::shared_ptr<MatrixOperator> MatrixOperator::from_file(const std::string& path, std::vector<int64_t> image_shape) {
  check_extension(path);
  const auto bytes = read_file(path);  // read once: for the matrix and for its fingerprint
  const auto matrix = matrix_of(parse_safetensors(bytes, path).tensors, path);
  std::shared_ptr<MatrixOperator> op;
  try {
    op = std::make_shared<MatrixOperator>(matrix, std::move(image_shape));
  } catch (const Error& e) {
    fail("the matrix file '{}': {}", path, e.what());
  }
  op->file_ = std::filesystem::absolute(path).string();
  op->fingerprint_ = fingerprint(bytes);
  return op;
}

torch::Tensor MatrixOperator::image_rows(const torch::Tensor& x) const { return x.reshape({-1, matrix_.size(1)}); }

torch::Tensor MatrixOperator::image_from_rows(const torch::Tensor& rows, int64_t batch) const {
  return rows.reshape({batch, image_shape_[0], image_shape_[1], image_shape_[2]});
}

torch::Tensor MatrixOperator::measurement_from_rows(const torch::Tensor& rows, int64_t batch) const {
  return rows.reshape({batch, -1, 1, matrix_.size(0)});
}

torch::Tensor MatrixOperator::forward(const torch::Tensor& x) const {
  auto rows = torch::mm(matrix_.to(x.scalar_type()), image_rows(x).t()).t();
  return measurement_from_rows(rows, x.size(0));
}

torch::Tensor MatrixOperator::adjoint(const torch::Tensor& y) const {
  auto rows = torch::mm(transposed_.to(y.scalar_type()), y.reshape({-1, matrix_.size(0)}).t()).t();
  return image_from_rows(rows, y.size(0));
}

const MatrixDecomposition* MatrixOperator::decomposition() const {
  if (matrix_.numel() > kMaxDecomposedEntries) return nullptr;
  std::call_once(decomposed_, [this] {
    const auto dense = matrix_.is_sparse() ? matrix_.to_dense() : matrix_;
    auto [u, s, vh] = torch::linalg_svd(dense.to(torch::kFloat64), /*full_matrices=*/false);
    decomposition_ = std::make_unique<MatrixDecomposition>(
        MatrixDecomposition{u.to(torch::kFloat32), s.to(torch::kFloat32), vh.t().contiguous().to(torch::kFloat32)});
  });
  return decomposition_.get();
}

torch::Tensor MatrixOperator::prox(const torch::Tensor& z, const torch::Tensor& y, double gamma) const {
  const auto* d = decomposition();
  if (!d) return LinearOperator::prox(z, y, gamma);
  UD2M_CHECK(gamma >= 0, "prox step gamma must be non-negative, not {}", gamma);
  // Row space: (γ s Uᵀy + Vᵀz)/(γ s² + 1) per coordinate; the null space keeps z.
  const auto type = z.scalar_type();
  auto zr = image_rows(z);
  auto vtz = torch::mm(zr, d->v.to(type));
  auto uty = torch::mm(y.reshape({-1, matrix_.size(0)}), d->u.to(type));
  auto s = d->s.to(type);
  auto coordinates = (gamma * s * uty + vtz) / (gamma * s * s + 1);
  return image_from_rows(zr + torch::mm(coordinates - vtz, d->v.t().to(type)), z.size(0));
}

torch::Tensor MatrixOperator::pinv(const torch::Tensor& y) const {
  const auto* d = decomposition();
  if (!d) return LinearOperator::pinv(y);
  const auto type = y.scalar_type();
  auto s = d->s.to(type);
  auto inverse = torch::where(s > 1e-6 * s.max(), 1 / s, torch::zeros_like(s));
  auto coordinates = torch::mm(y.reshape({-1, matrix_.size(0)}), d->u.to(type)) * inverse;
  return image_from_rows(torch::mm(coordinates, d->v.t().to(type)), y.size(0));
}

std::vector<int64_t> MatrixOperator::output_shape(const std::vector<int64_t>& s) const {
  UD2M_CHECK(s.size() == 4 && std::vector<int64_t>(s.begin() + 1, s.end()) == image_shape_,
             "the matrix operator is for {} images, not {}", fmt::join(image_shape_, "x"), fmt::join(s, "x"));
  return {s[0], per_channel_ ? s[1] : 1, 1, matrix_.size(0)};
}

nlohmann::json MatrixOperator::to_json() const {
  nlohmann::json j = {{"type", name()}, {"image_shape", image_shape_}, {"rows", matrix_.size(0)},
                      {"columns", matrix_.size(1)}};
  if (file_.empty()) {
    j["matrix"] = tensor_to_json(matrix_.is_sparse() ? matrix_.to_dense() : matrix_);
  } else {
    j["file"] = file_;
    j["fingerprint"] = fingerprint_;
  }
  return j;
}

std::shared_ptr<MatrixOperator> MatrixOperator::from_json(const nlohmann::json& j) {
  const auto image_shape = json_get<std::vector<int64_t>>(j, "image_shape", "matrix operator");
  if (!j.contains("file"))
    return std::make_shared<MatrixOperator>(tensor_from_json(json_get<nlohmann::json>(j, "matrix", "matrix operator"),
                                                             "matrix operator"),
                                            image_shape);
  const auto path = json_get<std::string>(j, "file", "matrix operator");
  UD2M_CHECK(std::filesystem::exists(path), "the measurement's matrix file '{}' does not exist", path);
  auto op = from_file(path, image_shape);
  const auto expected = json_get<std::string>(j, "fingerprint", "matrix operator");
  UD2M_CHECK(op->fingerprint_ == expected,
             "the matrix file '{}' has changed since the measurement was made (fingerprint {}, then {})", path,
             op->fingerprint_, expected);
  return op;
}

void find_moved_matrix(nlohmann::json& sidecar, const std::string& folder) {
  if (!sidecar.is_object() || !sidecar.contains("operator")) return;
  auto& op = sidecar["operator"];
  if (!op.is_object() || op.value("type", "") != "matrix" || !op.contains("file") || !op["file"].is_string()) return;
  const std::filesystem::path recorded = op["file"].get<std::string>();
  const auto beside = std::filesystem::path(folder) / recorded.filename();
  if (!std::filesystem::exists(recorded) && std::filesystem::exists(beside)) op["file"] = beside.string();
}

torch::Tensor load_matrix_file(const std::string& path) {
  check_extension(path);
  return matrix_of(read_safetensors(path).tensors, path);
}

int64_t matrix_file_columns(const std::string& path) {
  SafetensorsReader reader(path);
  const auto& layout = reader.layout();
  if (auto it = layout.find("matrix"); it != layout.end() && it->second.dim() == 2) return it->second.size(1);
  if (layout.count("shape")) {
    auto shape = reader.read("shape");
    UD2M_CHECK(shape.numel() == 2, "'{}': shape must be two integers", path);
    return shape[1].item<int64_t>();
  }
  fail("'{}' holds no 2-D 'matrix' nor a sparse matrix's 'shape'", path);
}

torch::Tensor measurement_to_model(const Operator& op, const torch::Tensor& y) {
  auto* matrix = dynamic_cast<const MatrixOperator*>(&op);
  if (!matrix) return y;
  torch::NoGradGuard no_grad;
  return 2 * y - measurement_of_ones(*matrix);
}

torch::Tensor measurement_from_model(const Operator& op, const torch::Tensor& y) {
  auto* matrix = dynamic_cast<const MatrixOperator*>(&op);
  if (!matrix) return y;
  torch::NoGradGuard no_grad;
  return (y + measurement_of_ones(*matrix)) / 2;
}

}  // namespace ud2m::physics
