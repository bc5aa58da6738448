/* ----------------------------------------------------------------------
   lmpbench: the torch operators of per-layer ghost exchange (see mlff_exchange.h).
------------------------------------------------------------------------- */

#include "mlff_exchange.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

namespace {

mlff::GhostExchanger *active_exchanger = nullptr;

// features in, a fresh tensor out (operators must not return views of their inputs); the
// exchanger sees float64 rows on the CPU whatever the model's dtype and device
at::Tensor exchange_rows(const at::Tensor &features, bool reverse)
{
  TORCH_CHECK(features.dim() >= 1, "mlff ghost exchange: expected node rows, got a scalar");
  if (active_exchanger == nullptr) return features.clone();
  const int64_t nrows = features.size(0);
  const int64_t width = nrows > 0 ? features.numel() / nrows : 0;
  at::Tensor rows = features.detach().to(at::kCPU, at::kDouble, false, true).contiguous().view({nrows, width});
  if (reverse)
    active_exchanger->reverse(rows.data_ptr<double>(), nrows, width);
  else
    active_exchanger->forward(rows.data_ptr<double>(), nrows, width);
  return rows.view(features.sizes()).to(features.device(), features.scalar_type());
}

at::Tensor ghost_exchange_kernel(const at::Tensor &features)
{
  return exchange_rows(features, false);
}

at::Tensor ghost_reverse_kernel(const at::Tensor &grad)
{
  return exchange_rows(grad, true);
}

at::Tensor shape_kernel(const at::Tensor &features)
{
  return at::empty_like(features);
}

at::Tensor call_operator(const char *name, const at::Tensor &x)
{
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<at::Tensor(const at::Tensor &)>();
  return op.call(x);
}

// ghost_exchange and ghost_reverse are linear and each other's adjoint
template <bool Reverse> class ExchangeFunction :
    public torch::autograd::Function<ExchangeFunction<Reverse>> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext *, const at::Tensor &x)
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_operator(Reverse ? "mlff::ghost_reverse" : "mlff::ghost_exchange", x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *,
                                                 torch::autograd::variable_list grad)
  {
    return {ExchangeFunction<!Reverse>::apply(grad[0])};
  }
};

at::Tensor ghost_exchange_autograd(const at::Tensor &features)
{
  return ExchangeFunction<false>::apply(features);
}

at::Tensor ghost_reverse_autograd(const at::Tensor &grad)
{
  return ExchangeFunction<true>::apply(grad);
}

}    // namespace

void mlff::set_ghost_exchanger(GhostExchanger *exchanger)
{
  active_exchanger = exchanger;
}

TORCH_LIBRARY(mlff, m)
{
  m.def("ghost_exchange(Tensor features) -> Tensor");
  m.def("ghost_reverse(Tensor grad) -> Tensor");
}

TORCH_LIBRARY_IMPL(mlff, CPU, m)
{
  m.impl("ghost_exchange", ghost_exchange_kernel);
  m.impl("ghost_reverse", ghost_reverse_kernel);
}

TORCH_LIBRARY_IMPL(mlff, CUDA, m)
{
  m.impl("ghost_exchange", ghost_exchange_kernel);
  m.impl("ghost_reverse", ghost_reverse_kernel);
}

// shapes only, for tracing and export with fake tensors
TORCH_LIBRARY_IMPL(mlff, Meta, m)
{
  m.impl("ghost_exchange", shape_kernel);
  m.impl("ghost_reverse", shape_kernel);
}

TORCH_LIBRARY_IMPL(mlff, Autograd, m)
{
  m.impl("ghost_exchange", ghost_exchange_autograd);
  m.impl("ghost_reverse", ghost_reverse_autograd);
}
