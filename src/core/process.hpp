// Process-wide settings that every ud2m program starts with — the CLI and
// the benchmarks — so that a benchmark times what the tool runs.
#pragma once

namespace ud2m {

// - Subnormal floats (tiny activations) are ~100× slower on x86 and never
//   matter to a network: flush them to zero.
// - Keep freed memory in the process for the next allocation. glibc's malloc
//   hands allocations over 32 MiB (a 256² activation of 128 fp32 channels) to
//   fresh mmaps, which the kernel page-faults and zeroes on first touch, on
//   every allocation of every pass: 13% of a 256² ADM pass (FFHQ config, fp32,
//   2 threads). The cost: a higher peak RSS (+19% there), as freed blocks stay.
void configure_process();

}  // namespace ud2m
