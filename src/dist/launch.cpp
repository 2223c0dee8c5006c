#include "dist/launch.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <thread>

#include "core/error.hpp"
#include "core/log.hpp"

extern char** environ;

namespace ud2m::dist {

namespace {

// The variables a launcher sets; ours replace whatever the parent had.
const char* const kLaunchVariables[] = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                        "MASTER_PORT"};

// Binds a TCP socket to the port on every interface (as the rendezvous server
// will) and returns the port bound, or −1 when it is taken.
int try_bind(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  UD2M_CHECK(fd >= 0, "cannot open a TCP socket: {}", std::strerror(errno));
  const int on = 1;  // a port in TIME_WAIT is still free for the server
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t length = sizeof address;
  int bound = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), length) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0)
    bound = ntohs(address.sin_port);
  ::close(fd);
  return bound;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exit code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("killed by signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  return fmt::format("wait status {}", status);
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (auto& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

// Everything a child needs is built before fork: between fork and exec only
// async-signal-safe calls are allowed (the parent may have threads).
pid_t start_worker(const std::string& exe, std::vector<std::string> argv, std::vector<std::string> env) {
  auto argv_c = c_strings(argv), env_c = c_strings(env);
  const pid_t parent = ::getpid();
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);   // no orphaned ranks if the launcher dies
    if (::getppid() != parent) ::_exit(1);  // it died before prctl took effect
    ::execve(exe.c_str(), argv_c.data(), env_c.data());
    ::_exit(127);
  }
  return pid;
}

}  // namespace

std::vector<std::string> own_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t start = 0; start < all.size();) {
    const size_t end = all.find('\0', start);
    args.push_back(all.substr(start, end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return args;
}

std::vector<std::string> without_nproc(const std::vector<std::string>& command_line) {
  std::vector<std::string> args;
  for (size_t i = 1; i < command_line.size(); ++i) {
    if (command_line[i] == "--nproc") {
      ++i;  // and its value
      continue;
    }
    if (command_line[i].rfind("--nproc=", 0) == 0) continue;
    args.push_back(command_line[i]);
  }
  return args;
}

int free_loopback_port() {
  if (const char* text = std::getenv("MASTER_PORT")) {
    char* end = nullptr;
    const long port = std::strtol(text, &end, 10);
    UD2M_CHECK(*end == '\0' && port >= 1 && port <= 65535, "MASTER_PORT='{}' is not a TCP port", text);
    UD2M_CHECK(try_bind(static_cast<int>(port)) == port,
               "MASTER_PORT={} is taken on this machine: choose another or unset MASTER_PORT so that ud2m picks a "
               "free one",
               port);
    return static_cast<int>(port);
  }
  const int port = try_bind(0);  // the kernel's pick of a free ephemeral port
  UD2M_CHECK(port > 0, "cannot find a free TCP port on this machine for the workers' rendezvous");
  return port;
}

void run_local_workers(const std::vector<std::string>& args, int nproc) {
  UD2M_CHECK(nproc >= 1, "--nproc must be at least 1, not {}", nproc);
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  const int port = free_loopback_port();
  std::vector<std::string> argv{exe};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<std::string> base_env;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    if (std::find(std::begin(kLaunchVariables), std::end(kLaunchVariables), name) == std::end(kLaunchVariables))
      base_env.push_back(entry);
  }
  // Each worker's intra-op threads get their share of the cores (unless the
  // user chose): N workers with a thread per core each would oversubscribe
  // the CPU many times over (tens of times slower here with 2 workers on 2 cores).
  if (!std::getenv("OMP_NUM_THREADS"))
    base_env.push_back(fmt::format("OMP_NUM_THREADS={}",
                                   std::max(1u, std::thread::hardware_concurrency() / static_cast<unsigned>(nproc))));
  log::info("starting {} worker processes (rendezvous on 127.0.0.1:{})", nproc, port);

  std::map<pid_t, int> running;  // pid → rank
  std::optional<std::string> failure;
  auto stop_others = [&] {
    for (auto& [pid, rank] : running) ::kill(pid, SIGTERM);
  };
  for (int rank = 0; rank < nproc; ++rank) {
    auto env = base_env;
    for (auto& [name, value] : std::initializer_list<std::pair<const char*, std::string>>{
             {"RANK", std::to_string(rank)},       {"LOCAL_RANK", std::to_string(rank)},
             {"WORLD_SIZE", std::to_string(nproc)}, {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
             {"MASTER_ADDR", "127.0.0.1"},          {"MASTER_PORT", std::to_string(port)}})
      env.push_back(std::string(name) + "=" + value);
    const pid_t pid = start_worker(exe, argv, env);
    if (pid < 0) {
      failure = fmt::format("cannot start worker rank {}: {}", rank, std::strerror(errno));
      stop_others();
      break;
    }
    log::info("rank {} is process {}", rank, pid);
    running[pid] = rank;
  }
  // The first rank to fail stops the job: the others would wait on it forever.
  while (!running.empty()) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    auto it = running.find(pid);
    if (it == running.end()) continue;
    const int rank = it->second;
    running.erase(it);
    if ((WIFEXITED(status) && WEXITSTATUS(status) == 0) || failure) continue;
    failure = fmt::format("worker rank {} of {} (process {}) failed: {}; the other ranks were stopped", rank, nproc,
                          pid, describe(status));
    stop_others();
  }
  if (failure) fail("{}", *failure);
}

bool run_local_workers_if_requested(int nproc, bool given) {
  if (!given) return false;
  UD2M_CHECK(nproc >= 1, "--nproc must be at least 1, not {}", nproc);
  UD2M_CHECK(!std::getenv("WORLD_SIZE"), "--nproc starts its own worker processes: drop it when a launcher sets WORLD_SIZE");
  if (nproc == 1) return false;
  run_local_workers(without_nproc(own_command_line()), nproc);
  return true;
}

}  // namespace ud2m::dist
