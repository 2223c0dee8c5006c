// Few-step generation with an NCVSD generator (as published): on a 40-level
// Karras grid (σ 80 → 0.002, ρ = 7) and an index set such as {12, 39} (1 step),
// {10, 22, 39} (2 steps) or {0, 10, 20, 30, 39} (4 steps; the last index only
// ends the grid): start from y = 80·z₁ (an observation carrying no
// information) and x = t₀·z₂; at each level t_k combine the two Gaussian
// views of x0 into one, (y_eff, σ_eff) as in the noise-conditional identity,
// draw x0 = G(y_eff, σ_eff), re-noise to the next level. Returns the last x0.
#pragma once
#include <vector>

#include "ncvsd/networks.hpp"

namespace ud2m::ncvsd {

constexpr double kGenerationSigmaMax = 80;

// The 40-level Karras grid, σ 80 → 0.002, ρ = 7.
std::vector<double> generation_levels();
// The published index set for 1, 2 or 4 steps.
std::vector<int> default_indices(int steps);

// The images come back on `device` (where the generator is), drawn from the CPU generator rng.
torch::Tensor generate_images(GeneratorNetImpl& generator, const std::vector<int64_t>& shape,
                              const std::vector<int>& indices, torch::Generator& rng,
                              const torch::Device& device = torch::kCPU);

}  // namespace ud2m::ncvsd
