// Data parallelism across processes with torch.distributed (c10d): a process
// group of `world` ranks that average gradients, broadcast weights and wait
// for each other. Gloo carries CPU tensors, NCCL CUDA tensors. With one
// process every call is a no-op, so callers need no special case.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ud2m::dist {

// Where this process sits in a job, as torchrun (and `--nproc`) describe it in
// the environment: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.
struct LaunchEnv {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// The launcher's variables; nullopt when WORLD_SIZE is unset (a single process).
// Missing or malformed variables are errors that name the variable.
std::optional<LaunchEnv> launch_env_from_environment();

// Each rank's share of a global batch; an error unless `world` divides it.
int rank_batch(int batch, int world);

class DistContext {
 public:
  DistContext() = default;  // one process: every collective is a no-op

  // Joins the job described by `env` (rendezvous through a TCPStore served by
  // rank 0 at MASTER_ADDR:MASTER_PORT). NCCL when `device` is CUDA (each rank
  // on cuda:LOCAL_RANK), Gloo otherwise.
  DistContext(const LaunchEnv& env, torch::Device device);

  // From the environment: a single process when WORLD_SIZE is unset or 1.
  static std::shared_ptr<DistContext> from_environment(torch::Device device = torch::kCPU);

  int rank() const { return rank_; }
  int world() const { return world_; }
  bool is_main() const { return rank_ == 0; }

  // In place: every tensor becomes the mean of its values over the ranks
  // (one collective for all of them: they are packed into one flat buffer).
  void allreduce_mean(const std::vector<torch::Tensor>& tensors);
  // In place: every tensor becomes rank `root`'s value.
  void broadcast(const std::vector<torch::Tensor>& tensors, int root = 0);
  void barrier();

  // Data parallelism where every rank draws the whole batch from one stream
  // (on the CPU): this rank's rows of such a tensor (the world divides its
  // first dimension), moved to the device it trains on.
  torch::Tensor share(const torch::Tensor& whole, const torch::Device& device = torch::kCPU) const;
  // After each rank's backward pass on its equal share: the defined gradients
  // of `parameters` (and the `extra` tensors, e.g. losses for the log) become
  // their means over the ranks — the gradient of the whole batch's mean loss.
  // One collective.
  void average_gradients(const std::vector<torch::Tensor>& parameters, std::vector<torch::Tensor> extra = {});

 private:
  struct Group;  // the c10d store and backend, kept out of this header
  int rank_ = 0, world_ = 1;
  std::shared_ptr<Group> group_;
};

}  // namespace ud2m::dist
