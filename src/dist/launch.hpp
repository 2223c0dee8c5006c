// `--nproc N`: this process becomes a small launcher, like torchrun on one
// machine: it starts N copies of its own executable, with the same arguments
// less --nproc, as the ranks of one job on loopback, and waits for them.
#pragma once
#include <string>
#include <vector>

namespace ud2m::dist {

// This process's command line as it was started (from /proc/self/cmdline).
std::vector<std::string> own_command_line();

// The arguments without `--nproc N` / `--nproc=N` (and without argv[0]).
std::vector<std::string> without_nproc(const std::vector<std::string>& command_line);

// A TCP port on 127.0.0.1 nobody listens on now (MASTER_PORT when set, checked).
int free_loopback_port();

// Runs `args` with this executable as ranks 0..nproc−1 (RANK, LOCAL_RANK,
// WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT set) and waits for all of
// them. If one fails, the others are stopped and an error names the rank and
// its exit code or signal. Workers die with this process (PR_SET_PDEATHSIG).
void run_local_workers(const std::vector<std::string>& args, int nproc);

// A trainer's `--nproc N` (`given`: it was on the command line): checks N ≥ 1
// and that no launcher has set WORLD_SIZE; for N > 1 runs this command's N
// workers and returns true, after which this process has nothing left to do.
bool run_local_workers_if_requested(int nproc, bool given);

}  // namespace ud2m::dist
