// A user's own linear operator as a matrix file: adjoint identity (dense and
// sparse, per channel and whole image), a blur written as a matrix behaves as
// the blur (forward, prox, singular values), and the CLI round trip.
#include <filesystem>

#include "core/atomic_file.hpp"
#include "core/image.hpp"
#include "io/safetensors.hpp"
#include "metrics/metrics.hpp"
#include "physics/blur.hpp"
#include "physics/degradation.hpp"
#include "physics/kernels.hpp"
#include "physics/matrix.hpp"
#include "physics/svd.hpp"
#include "test_util.hpp"
#include "tiny_runs.hpp"

using namespace ud2m;
namespace fs = std::filesystem;

namespace {

double sum_of_products(const torch::Tensor& a, const torch::Tensor& b) { return (a * b).sum().item<double>(); }

// A random matrix with about half its entries zero, dense and as sparse COO.
std::pair<torch::Tensor, torch::Tensor> random_matrix(int64_t rows, int64_t columns) {
  auto dense = torch::randn({rows, columns}) * (torch::rand({rows, columns}) < 0.5);
  return {dense, dense.to_sparse()};
}

}  // namespace

TEST(MatrixOperator, AdjointIdentityDenseAndSparsePerChannelAndWhole) {
  torch::manual_seed(0);
  for (const bool whole : {false, true}) {
    const int64_t columns = whole ? 3 * 8 * 6 : 8 * 6;
    auto [dense, sparse] = random_matrix(37, columns);
    physics::MatrixOperator a(dense, {3, 8, 6}), b(sparse, {3, 8, 6});
    EXPECT_EQ(a.per_channel(), !whole);
    const auto x = torch::randn({2, 3, 8, 6}, torch::kFloat64);  // in float64: the identity, not rounding, is tested
    const auto y = torch::randn(a.output_shape({2, 3, 8, 6}), torch::kFloat64);
    EXPECT_EQ(a.forward(x).sizes().vec(), std::vector<int64_t>({2, whole ? 1 : 3, 1, 37}));
    const double lhs = sum_of_products(a.forward(x), y), rhs = sum_of_products(x, a.adjoint(y));
    EXPECT_LT(std::abs(lhs - rhs) / std::abs(lhs), 1e-10) << whole;
    EXPECT_LT(test::max_rel_error(b.forward(x), a.forward(x)), 1e-5);
    EXPECT_LT(test::max_rel_error(b.adjoint(y), a.adjoint(y)), 1e-5);
    // The matrix rebuilds from the sidecar's values (no file behind it).
    auto again = physics::operator_from_json(a.to_json());
    EXPECT_TRUE(torch::equal(again->forward(x), a.forward(x)));
  }
}

TEST(MatrixOperator, ClosedFormsThroughTheDecompositionEqualConjugateGradients) {
  // Wide (a null space) and tall, per channel and whole: the SVD prox and A†
  // against the generic CG solutions of the same problems.
  torch::manual_seed(5);
  for (auto [rows, columns] : {std::pair<int64_t, int64_t>{20, 48}, {60, 48}, {100, 144}}) {
    physics::MatrixOperator op(torch::randn({rows, columns}), {3, 8, 6});
    ASSERT_TRUE(op.has_closed_form_prox());
    const auto x = torch::randn({2, 3, 8, 6}, torch::kFloat64), z = torch::randn({2, 3, 8, 6}, torch::kFloat64);
    const auto y = op.forward(x) + 0.1 * torch::randn(op.output_shape({2, 3, 8, 6}), torch::kFloat64);
    EXPECT_LT(test::max_rel_error(op.prox(z, y, 7.0), op.physics::LinearOperator::prox(z, y, 7.0)), 1e-5) << rows;
    EXPECT_LT(test::max_rel_error(op.pinv(y), op.physics::LinearOperator::pinv(y)), 1e-4) << rows;
  }
}

TEST(MatrixOperator, BlurWrittenAsAMatrixIsTheBlur) {
  // The circular blur's matrix, column j = A e_j: the same measurement, the
  // same prox (CG against the closed form) and the same singular values
  // (|blur spectrum|) as the FFT operator.
  const int64_t h = 8, w = 8;
  physics::CircularBlur blur(physics::gaussian_kernel(3, 1.0), h, w);
  auto basis = torch::eye(h * w).reshape({h * w, 1, h, w});
  auto matrix = blur.forward(basis).reshape({h * w, h * w}).t().contiguous();
  physics::MatrixOperator op(matrix, {3, h, w});
  torch::manual_seed(1);
  const auto x = torch::randn({2, 3, h, w}), z = torch::randn({2, 3, h, w});
  const auto y = blur.forward(x).reshape({2, 3, 1, h * w});
  EXPECT_LT(test::max_rel_error(op.forward(x), y), 1e-5);
  EXPECT_LT(test::max_rel_error(op.prox(z, y, 3.0), blur.prox(z, blur.forward(x), 3.0)), 1e-4);
  auto svd = physics::svd_of(op);
  ASSERT_TRUE(svd);
  auto s = std::get<0>(svd->singular_values(torch::zeros({1})).sort(0, /*descending=*/true));
  auto expected = std::get<0>(blur.half_spectrum().abs().flatten().sort(0, true));
  // The real FFT's half spectrum counts each conjugate pair once: compare the largest and the spread.
  EXPECT_NEAR(s[0].item<double>(), expected[0].item<double>(), 1e-5);
  EXPECT_NEAR(s[-1].item<double>(), expected[-1].item<double>(), 1e-5);
  // Uᵀ A x = s ⊙ Vᵀ x.
  EXPECT_LT(test::max_rel_error(svd->ut(op.forward(x)), svd->singular_values(x) * svd->vt(x)), 1e-4);
  EXPECT_LT(test::max_rel_error(svd->v(svd->vt(x)), x), 1e-4);  // square and invertible: V Vᵀ = I
}

TEST(MatrixOperator, CliDegradesRestoresAndRebuildsFromTheFile) {
  auto dir = test::temp_dir();
  const auto image = (dir / "x.png").string();
  auto clean = read_image(test::bundled_photo()).narrow(2, 100, 16).narrow(3, 100, 16);
  write_png(image, clean);
  torch::manual_seed(2);
  const auto matrix = torch::randn({160, 16 * 16}) / 16;  // compressed sensing: 160 of 256 per channel
  const auto file = (dir / "A.safetensors").string();
  write_safetensors(file, {{"matrix", matrix}});
  auto r = test::run_ud2m("degrade --task matrix --matrix " + file + " --sigma 0 " + image + " " +
                          (dir / "y.safetensors").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The file holds what an instrument records of the [0, 1] image: y = A v.
  auto y = read_safetensors((dir / "y.safetensors").string()).tensors.at("y");
  auto v = read_image(image).reshape({3, 256});
  EXPECT_LT(test::max_rel_error(y.reshape({3, 160}), torch::mm(v, matrix.t())), 1e-5);

  for (const std::string method : {"tv", "ddrm"}) {
    const std::string model = method == "tv" ? "" : " --model " + test::save_tiny_prior(dir / "prior.safetensors");
    r = test::run_ud2m("restore --method " + method + model + " -m " + (dir / "y.safetensors").string() +
                       " --reference " + image + " --out " + (dir / (method + ".png")).string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  // TV restores the compressed image far above the back-projection of the noiseless data.
  auto psnr = [&](const std::string& method) {
    return nlohmann::json::parse(read_file((dir / (method + ".json")).string())).at("psnr").get<double>();
  };
  const double back_projection = metrics::psnr(from_model(physics::MatrixOperator(matrix, {3, 16, 16}).pinv(
                                                   physics::measurement_to_model(
                                                       physics::MatrixOperator(matrix, {3, 16, 16}), y))).clamp(0, 1),
                                               clean);
  std::printf("compressed sensing 160/256, 16x16 crop: minimum-norm solution %.2f dB, TV %.2f dB, DDRM (random "
              "prior) %.2f dB\n", back_projection, psnr("tv"), psnr("ddrm"));
  EXPECT_GT(psnr("tv"), back_projection + 3);
  // The same measurement described by flags restores the same.
  r = test::run_ud2m("restore --method tv --task matrix --matrix " + file + " --image-size 16 --sigma 0 -m " +
                     (dir / "y.safetensors").string() + " --reference " + image + " --out " +
                     (dir / "tv_described.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_file((dir / "tv_described.png").string()), read_file((dir / "tv.png").string()));
  // A folder moved with its matrix (the recorded path gone) restores from its sidecar.
  fs::create_directories(dir / "moved");
  for (const char* name : {"y.safetensors", "y.json"}) fs::copy_file(dir / name, dir / "moved" / name);
  fs::rename(file, dir / "moved" / "A.safetensors");
  r = test::run_ud2m("restore --method tv -m " + (dir / "moved" / "y.safetensors").string() + " --out " +
                     (dir / "moved" / "tv.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_file((dir / "moved" / "tv.png").string()), read_file((dir / "tv.png").string()));
  fs::rename(dir / "moved" / "A.safetensors", file);

  // Bad input: no size for a described measurement, a PNG output, the wrong
  // width of matrix, a changed matrix file.
  r = test::run_ud2m("restore --method tv --task matrix --matrix " + file + " --sigma 0 -m " +
                     (dir / "y.safetensors").string() + " --out " + (dir / "z.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("task 'matrix' needs --image-size"), std::string::npos) << r.output;
  r = test::run_ud2m("degrade --task matrix --matrix " + file + " " + image + " " + (dir / "z.png").string());
  EXPECT_NE(r.output.find("write it to a .safetensors file"), std::string::npos) << r.output;
  const auto narrow = (dir / "narrow.safetensors").string();
  write_safetensors(narrow, {{"matrix", torch::randn({10, 100})}});
  r = test::run_ud2m("degrade --task matrix --matrix " + narrow + " " + image + " " + (dir / "z.safetensors").string());
  EXPECT_NE(r.output.find("the matrix has 100 columns, but a 3x16x16 image has 256 pixels per channel and 768"),
            std::string::npos)
      << r.output;
  write_safetensors(file, {{"matrix", 2 * matrix}});
  r = test::run_ud2m("restore --method tv -m " + (dir / "y.safetensors").string() + " --out " +
                     (dir / "z.png").string());
  EXPECT_NE(r.output.find("has changed since the measurement was made"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "z.png"));
  EXPECT_FALSE(fs::exists(dir / "z.safetensors"));
}

TEST(MatrixOperator, BadMatrixFilesAreNamed) {
  auto dir = test::temp_dir();
  auto file = [&](const std::string& name, const TensorMap& tensors) {
    const auto path = (dir / name).string();
    write_safetensors(path, tensors);
    return path;
  };
  EXPECT_THROW_MSG(physics::load_matrix_file(file("none.safetensors", {{"kernel", torch::ones({2, 2})}})),
                   "holds no 'matrix'");
  EXPECT_THROW_MSG(physics::MatrixOperator::from_file(
                       file("nan.safetensors", {{"matrix", torch::full({2, 4}, NAN)}}), {1, 2, 2}),
                   "non-finite values");
  EXPECT_THROW_MSG(physics::load_matrix_file(file("outside.safetensors",
                                                  {{"indices", torch::tensor({0, 5}, torch::kLong).reshape({2, 1})},
                                                   {"values", torch::ones({1})},
                                                   {"shape", torch::tensor({2, 4}, torch::kLong)}})),
                   "outside the 2x4 matrix");
  EXPECT_THROW_MSG(physics::load_matrix_file(file("partial.safetensors", {{"indices", torch::zeros({2, 1}, torch::kLong)}})),
                   "lacks 'values'");
  EXPECT_THROW_MSG(physics::MatrixOperator(torch::ones({3}), {1, 1, 3}), "2-D matrix");
}
