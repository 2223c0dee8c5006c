#include "dist/context.hpp"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>

#include "core/error.hpp"
#include "dist/nccl_backend.hpp"

namespace ud2m::dist {

int rank_batch(int batch, int world) {
  UD2M_CHECK(batch % world == 0, "the batch ({}) must be divisible by the number of processes ({}): each trains on "
             "an equal share", batch, world);
  return batch / world;
}

namespace {

// How long rank 0 waits for the others to join, and they for it.
constexpr std::chrono::seconds kRendezvousTimeout{300};

int int_variable(const char* name, std::optional<int> fallback = std::nullopt) {
  const char* text = std::getenv(name);
  if (!text || !*text) {
    UD2M_CHECK(fallback.has_value(), "the environment variable {} is required for multi-process training", name);
    return *fallback;
  }
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  UD2M_CHECK(*end == '\0' && value >= 0 && value <= 1 << 30, "the environment variable {}='{}' is not a count",
             name, text);
  return static_cast<int>(value);
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

c10::intrusive_ptr<c10d::Store> join_rendezvous(const LaunchEnv& env) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(env.master_port);
  options.isServer = env.rank == 0;
  options.numWorkers = env.world;
  options.timeout = kRendezvousTimeout;
  try {
    return c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
  } catch (const c10::Error& e) {
    if (env.rank == 0)
      fail("rank 0 cannot serve the rendezvous on {}:{} (MASTER_ADDR:MASTER_PORT; is the port taken?): {}",
           env.master_addr, env.master_port, e.what_without_backtrace());
    fail("rank {} cannot reach the rendezvous of rank 0 at {}:{} (MASTER_ADDR:MASTER_PORT) within {} s: {}", env.rank,
         env.master_addr, env.master_port, kRendezvousTimeout.count(), e.what_without_backtrace());
  }
}

c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                    const LaunchEnv& env) {
  auto options = c10d::ProcessGroupGloo::Options::create();
  // Gloo binds to the interface that reaches the peers: the one torchrun's users
  // name in GLOO_SOCKET_IFNAME, loopback for a one-machine job, else the host's.
  if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME"))
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  else if (is_loopback(env.master_addr))
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  else
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, env.rank, env.world, options);
}

// All tensors as one flat buffer, so a whole model moves in one collective.
torch::Tensor pack(const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> flat;
  for (auto& t : tensors) {
    UD2M_CHECK(t.scalar_type() == tensors[0].scalar_type() && t.device() == tensors[0].device(),
               "distributed collectives need tensors of one dtype and device");
    flat.push_back(t.detach().reshape(-1));
  }
  return torch::cat(flat);
}

void unpack(const torch::Tensor& buffer, const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (auto& t : tensors) {
    t.copy_(buffer.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}

}  // namespace

struct DistContext::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

std::optional<LaunchEnv> launch_env_from_environment() {
  if (!std::getenv("WORLD_SIZE")) return std::nullopt;
  LaunchEnv env;
  env.world = int_variable("WORLD_SIZE");
  UD2M_CHECK(env.world >= 1, "the environment variable WORLD_SIZE must be at least 1, not {}", env.world);
  env.rank = int_variable("RANK", env.world == 1 ? std::optional<int>(0) : std::nullopt);
  UD2M_CHECK(env.rank < env.world, "RANK={} is not below WORLD_SIZE={}", env.rank, env.world);
  env.local_rank = int_variable("LOCAL_RANK", env.rank);
  if (env.world > 1) {
    const char* addr = std::getenv("MASTER_ADDR");
    UD2M_CHECK(addr && *addr, "the environment variable MASTER_ADDR is required for multi-process training");
    env.master_addr = addr;
    env.master_port = int_variable("MASTER_PORT");
    UD2M_CHECK(env.master_port >= 1 && env.master_port <= 65535, "MASTER_PORT={} is not a TCP port",
               env.master_port);
  }
  return env;
}

DistContext::DistContext(const LaunchEnv& env, torch::Device device) : rank_(env.rank), world_(env.world) {
  if (world_ == 1) return;
  group_ = std::make_shared<Group>();
  if (device.is_cuda()) {
    UD2M_CHECK(torch::cuda::is_available(), "NCCL training needs a CUDA device, and none is available");
    UD2M_CHECK(env.local_rank < static_cast<int>(torch::cuda::device_count()),
               "LOCAL_RANK={} but this machine has {} CUDA devices", env.local_rank, torch::cuda::device_count());
  }
  group_->store = join_rendezvous(env);
  group_->backend = device.is_cuda() ? make_nccl_backend(group_->store, env.rank, env.world, env.local_rank)
                                     : make_gloo_backend(group_->store, env);
}

std::shared_ptr<DistContext> DistContext::from_environment(torch::Device device) {
  auto env = launch_env_from_environment();
  if (!env || env->world == 1) return std::make_shared<DistContext>();
  return std::make_shared<DistContext>(*env, device);
}

void DistContext::allreduce_mean(const std::vector<torch::Tensor>& tensors) {
  if (world_ == 1 || tensors.empty()) return;
  std::vector<torch::Tensor> buffer{pack(tensors)};
  group_->backend->allreduce(buffer)->wait();  // a sum: Gloo has no average
  buffer[0].div_(world_);
  unpack(buffer[0], tensors);
}

torch::Tensor DistContext::share(const torch::Tensor& whole, const torch::Device& device) const {
  const int64_t rows = whole.size(0) / world_;
  UD2M_CHECK(rows * world_ == whole.size(0), "a batch of {} cannot be split evenly over {} processes", whole.size(0),
             world_);
  return whole.narrow(0, rank_ * rows, rows).to(device);
}

void DistContext::average_gradients(const std::vector<torch::Tensor>& parameters, std::vector<torch::Tensor> extra) {
  for (auto& p : parameters)
    if (p.grad().defined()) extra.push_back(p.grad());
  allreduce_mean(extra);
}

void DistContext::broadcast(const std::vector<torch::Tensor>& tensors, int root) {
  if (world_ == 1 || tensors.empty()) return;
  std::vector<torch::Tensor> buffer{pack(tensors)};
  c10d::BroadcastOptions options;
  options.rootRank = root;
  group_->backend->broadcast(buffer, options)->wait();
  unpack(buffer[0], tensors);
}

void DistContext::barrier() {
  if (world_ == 1) return;
  group_->backend->barrier()->wait();
}

}  // namespace ud2m::dist
