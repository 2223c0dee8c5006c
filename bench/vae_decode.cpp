// Times the SD VAE's decoder (latents -> pixels, the last step of sampling a
// latent model), for bench/vae_decode.py, which runs diffusers on the same
// weights and latents in the same run.
// Usage: vae_decode VAE_FOLDER ITERS THREADS IO.safetensors
// Reads the latents z from IO and writes the pixels to IO.out.safetensors.
#include <chrono>
#include <cstdio>
#include <string>

#include "core/process.hpp"
#include "io/safetensors.hpp"
#include "nets/vae_decoder.hpp"
#include "process_memory.hpp"

int main(int argc, char** argv) {
  ud2m::configure_process();  // as the CLI
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s VAE_FOLDER ITERS THREADS IO.safetensors\n", argv[0]);
    return 2;
  }
  const int iters = std::stoi(argv[2]);
  at::set_num_threads(std::stoi(argv[3]));
  auto vae = ud2m::nets::load_vae_decoder(argv[1]);
  const auto z = ud2m::read_safetensors(argv[4]).tensors.at("z").to(torch::kFloat32);
  torch::NoGradGuard no_grad;
  auto pixels = vae(z);  // warm-up
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) pixels = vae(z);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
  ud2m::write_safetensors(std::string(argv[4]) + ".out.safetensors", {{"pixels", pixels.contiguous()}});
  std::printf("{\"seconds_per_decode\": %.6f, \"peak_rss_mib\": %.1f}\n", seconds, ud2m::bench::peak_rss_mib());
  return 0;
}
