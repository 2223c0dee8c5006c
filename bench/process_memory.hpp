// The C++ benchmarks' memory figures, from /proc/self/status (getrusage's
// maxrss survives exec and would report a Python parent's peak).
#pragma once
#include <fstream>
#include <string>

namespace ud2m::bench {

// A /proc/self/status field given in kB ("VmRSS:", "VmHWM:"), in MiB; 0 where absent.
inline double status_mib(const std::string& key) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(key.size())) / 1024.0;
  return 0.0;
}

// This process's peak resident memory.
inline double peak_rss_mib() { return status_mib("VmHWM:"); }

}  // namespace ud2m::bench
