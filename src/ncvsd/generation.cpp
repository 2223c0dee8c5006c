#include "ncvsd/generation.hpp"

#include <algorithm>
#include <cctype>
#include <optional>
#include <sstream>

#include "core/error.hpp"
#include "core/random.hpp"
#include "ncvsd/vsd.hpp"
#include "samplers/pnp_ncvsd.hpp"

namespace ud2m::ncvsd {
namespace {

// A non-negative integer of at most three digits (steps, level indices), else none.
std::optional<int> small_integer(const std::string& text) {
  if (text.empty() || text.size() > 3 || !std::all_of(text.begin(), text.end(), ::isdigit)) return std::nullopt;
  return std::stoi(text);
}

}  // namespace

std::vector<double> generation_levels() { return samplers::karras_sigmas(40, 0.002, kGenerationSigmaMax, 7); }

std::vector<int> published_indices(int steps) {
  switch (steps) {
    case 1: return {12, 39};
    case 2: return {10, 22, 39};
    case 4: return {0, 10, 20, 30, 39};
    default: fail("NCVSD generation has published level sets for 1, 2 or 4 steps, not {}", steps);
  }
}

std::vector<int> default_indices(int steps, const GeneratorNetImpl& generator) {
  if (auto it = generator.level_sets.find(steps); it != generator.level_sets.end()) return it->second;
  if (steps == 1 || steps == 2 || steps == 4) return published_indices(steps);
  std::vector<int> own;
  for (const auto& set : generator.level_sets) own.push_back(set.first);
  fail("NCVSD generation has published level sets for 1, 2 or 4 steps{}, not {}: give --indices, or store a set in "
       "the generator with `ud2m convert --levels {}:i0,i1,...`",
       own.empty() ? "" : fmt::format(" and this generator its own for {}", fmt::join(own, ", ")), steps, steps);
}

void check_level_set(int steps, const std::vector<int>& indices, const std::string& where) {
  const int grid = static_cast<int>(generation_levels().size());
  UD2M_CHECK(indices.size() >= 2, "{}: NCVSD generation needs at least two level indices (one step), not {}", where,
             indices.size());
  UD2M_CHECK(steps < 0 || indices.size() == static_cast<size_t>(steps) + 1,
             "{}: {} steps take {} level indices (the last one ends the grid), not {}", where, steps, steps + 1,
             indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    UD2M_CHECK(indices[i] >= 0 && indices[i] < grid, "{}: NCVSD level index {} is outside the grid 0..{}", where,
               indices[i], grid - 1);
    UD2M_CHECK(i == 0 || indices[i] > indices[i - 1], "{}: NCVSD level indices must increase: {} after {}", where,
               indices[i], indices[i - 1]);
  }
}

int parse_step_count(const std::string& text, const std::string& where) {
  const auto steps = small_integer(text);
  UD2M_CHECK(steps && *steps > 0, "{}: '{}' is not a number of steps", where, text);
  return *steps;
}

std::pair<int, std::vector<int>> parse_level_set(const std::string& text) {
  const auto where = fmt::format("level set '{}'", text);
  const auto colon = text.find(':');
  UD2M_CHECK(colon != std::string::npos, "{}: write it as STEPS:I0,I1,... e.g. 4:0,10,20,30,39", where);
  const int steps = parse_step_count(text.substr(0, colon), where);
  std::vector<int> indices;
  std::stringstream list(text.substr(colon + 1));
  for (std::string index; std::getline(list, index, ',');) {
    const auto parsed = small_integer(index);
    UD2M_CHECK(parsed, "{}: '{}' is not a level index", where, index);
    indices.push_back(*parsed);
  }
  check_level_set(steps, indices, where);
  return {steps, indices};
}

torch::Tensor generate_images(GeneratorNetImpl& generator, const std::vector<int64_t>& shape,
                              const std::vector<int>& indices, torch::Generator& rng, const torch::Device& device) {
  const auto levels = generation_levels();
  check_level_set(-1, indices, "generation");
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
