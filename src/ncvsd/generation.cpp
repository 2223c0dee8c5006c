#include "ncvsd/generation.hpp"

#include "core/error.hpp"
#include "core/random.hpp"
#include "ncvsd/vsd.hpp"
#include "samplers/pnp_ncvsd.hpp"

namespace ud2m::ncvsd {

std::vector<double> generation_levels() { return samplers::karras_sigmas(40, 0.002, kGenerationSigmaMax, 7); }

std::vector<int> default_indices(int steps) {
  switch (steps) {
    case 1: return {12, 39};
    case 2: return {10, 22, 39};
    case 4: return {0, 10, 20, 30, 39};
    default: fail("NCVSD generation has published level sets for 1, 2 or 4 steps, not {}", steps);
  }
}

torch::Tensor generate_images(GeneratorNetImpl& generator, const std::vector<int64_t>& shape,
                              const std::vector<int>& indices, torch::Generator& rng, const torch::Device& device) {
  const auto levels = generation_levels();
  UD2M_CHECK(indices.size() >= 2, "NCVSD generation needs at least two level indices (one step), not {}",
             indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    UD2M_CHECK(indices[i] >= 0 && indices[i] < static_cast<int>(levels.size()),
               "NCVSD level index {} is outside the grid 0..{}", indices[i], levels.size() - 1);
    UD2M_CHECK(i == 0 || indices[i] > indices[i - 1], "NCVSD level indices must increase: {} after {}", indices[i],
               indices[i - 1]);
  }
  torch::NoGradGuard no_grad;
  const int64_t n = shape[0];
  auto options = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  auto y = kGenerationSigmaMax * gaussian(shape, rng, options);
  auto sigma = torch::full({n}, kGenerationSigmaMax, options);
  auto x = levels[indices[0]] * gaussian(shape, rng, options);
  torch::Tensor x0;
  for (size_t i = 0; i + 1 < indices.size(); ++i) {
    auto t = torch::full({n}, levels[indices[i]], options);
    auto point = noise_conditional_point(y, sigma, x, t);
    x0 = generate(generator, point.y_eff, point.sigma_eff, rng);
    if (!generator.latent_space()) x0 = x0.clamp(-1, 1);  // images; latents have no such range
    x = x0 + levels[indices[i + 1]] * gaussian(shape, rng, options);
  }
  return x0;
}

}  // namespace ud2m::ncvsd
