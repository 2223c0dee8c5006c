#include "diffusion/graphed_denoiser.hpp"

#include "core/error.hpp"

#ifdef UD2M_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>
#endif

namespace ud2m::diffusion {

#ifdef UD2M_WITH_CUDA
struct GraphedDenoiser::Graph {
  at::cuda::CUDAGraph graph;
  torch::Tensor x, t, eps;  // the captured pass reads and writes these buffers

  bool fits(const torch::Tensor& x_t, const torch::Tensor& t_in) const {
    return x.sizes() == x_t.sizes() && x.dtype() == x_t.dtype() && x.device() == x_t.device() &&
           x.is_contiguous(torch::MemoryFormat::ChannelsLast) == x_t.is_contiguous(torch::MemoryFormat::ChannelsLast) &&
           t.sizes() == t_in.sizes() && t.dtype() == t_in.dtype();
  }
};
#else
struct GraphedDenoiser::Graph {};
#endif

GraphedDenoiser::GraphedDenoiser(DenoiserPtr inner) : inner_(std::move(inner)) {
  UD2M_CHECK(inner_ != nullptr, "GraphedDenoiser needs a denoiser");
}

GraphedDenoiser::~GraphedDenoiser() = default;

torch::Tensor GraphedDenoiser::epsilon(const torch::Tensor& x_t, const torch::Tensor& t) {
  replayed_ = false;
#ifdef UD2M_WITH_CUDA
  if (x_t.is_cuda() && t.is_cuda() && !torch::GradMode::is_enabled() && inner_->capturable_in_cuda_graph()) {
    if (!graph_ || !graph_->fits(x_t, t)) capture(x_t, t);
    graph_->x.copy_(x_t);
    graph_->t.copy_(t);
    graph_->graph.replay();
    replayed_ = true;
    return graph_->eps.clone();  // the next replay overwrites the buffer
  }
#endif
  return inner_->epsilon(x_t, t);
}

void GraphedDenoiser::capture(const torch::Tensor& x_t, const torch::Tensor& t) {
#ifdef UD2M_WITH_CUDA
  graph_.reset();  // frees the previous graph's memory pool first
  auto g = std::make_unique<Graph>();
  g->x = x_t.clone();
  g->t = t.clone();
  torch::cuda::synchronize();
  // Capture needs a stream other than the default one; the warm-up passes on
  // it let cuDNN pick its algorithms and the allocator settle before capture.
  auto stream = c10::cuda::getStreamFromPool(false, x_t.device().index());
  {
    c10::cuda::CUDAStreamGuard on_side_stream(stream);
    for (int i = 0; i < 3; ++i) inner_->epsilon(g->x, g->t);
    stream.synchronize();
    g->graph.capture_begin();
    g->eps = inner_->epsilon(g->x, g->t);
    g->graph.capture_end();
  }
  torch::cuda::synchronize();
  graph_ = std::move(g);
#else
  (void)x_t, (void)t;
#endif
}

}  // namespace ud2m::diffusion
