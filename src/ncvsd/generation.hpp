// Few-step generation with an NCVSD generator (as published): on a 40-level
// Karras grid (σ 80 → 0.002, ρ = 7) and an index set such as {12, 39} (1 step),
// {10, 22, 39} (2 steps) or {0, 10, 20, 30, 39} (4 steps; the last index only
// ends the grid): start from y = 80·z₁ (an observation carrying no
// information) and x = t₀·z₂; at each level t_k combine the two Gaussian
// views of x0 into one, (y_eff, σ_eff) as in the noise-conditional identity,
// draw x0 = G(y_eff, σ_eff), re-noise to the next level. Returns the last x0.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "ncvsd/networks.hpp"

namespace ud2m::ncvsd {

constexpr double kGenerationSigmaMax = 80;

// The 40-level Karras grid, σ 80 → 0.002, ρ = 7.
std::vector<double> generation_levels();
// The published index set for 1, 2 or 4 steps.
std::vector<int> published_indices(int steps);
// The generator's own set for `steps` (GeneratorNetImpl::level_sets), else the published one.
std::vector<int> default_indices(int steps, const GeneratorNetImpl& generator);

// Checks an index set: increasing indices on the grid, steps + 1 of them
// (steps < 0: any number ≥ 2). `where` names it in the error.
void check_level_set(int steps, const std::vector<int>& indices, const std::string& where);
// A positive step count written as text ("4").
int parse_step_count(const std::string& text, const std::string& where);
// "4:0,14,22,30,39" (`convert --levels`) -> {4, {0, 14, 22, 30, 39}}, checked.
std::pair<int, std::vector<int>> parse_level_set(const std::string& text);

// The images come back on `device` (where the generator is), drawn from the CPU generator rng.
torch::Tensor generate_images(GeneratorNetImpl& generator, const std::vector<int64_t>& shape,
                              const std::vector<int>& indices, torch::Generator& rng,
                              const torch::Device& device = torch::kCPU);

}  // namespace ud2m::ncvsd
