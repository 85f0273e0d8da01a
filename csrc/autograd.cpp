// The compiled variants' autograd (issue 36 part 2), as torchvision gives its ops theirs: a C++
// kernel at the Autograd key, so an eager call crosses from Python into C++ once, and the
// backward runs no Python at all. One generic kernel serves every op: what the backward op
// takes is read off the schemas, by the convention of pixelkernels/_op.py:
//   grad_<out>   the gradient of output <out> (when that output got none: None where the argument
//                is optional, Tensor?, else zeros; outputs without such an argument are not
//                differentiable)
//   <name>       the forward input or output of that name, else the schema's default
// and it returns the gradients of the op's grad_inputs, in that order.
// Double backward (create_graph=True) calls the backward op through its own autograd, which
// _op.py registers from Python: the derivative of the reference's VJP.
#include "autograd.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/stack.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "torch_utils.h"

#define PK_STR_(x) #x
#define PK_STR(x) PK_STR_(x)

namespace pixelkernels {
namespace {

namespace ag = torch::autograd;

// A node's pointer type: std::shared_ptr<Node> up to torch 2.12, c10::intrusive_ptr<Node> after.
using NodePtr = decltype(std::declval<ag::Node&>().getptr());

template <class P>
struct MakeNode;
template <class N>
struct MakeNode<std::shared_ptr<N>> {
  template <class T, class... A>
  static std::shared_ptr<T> make(A&&... a) {
    return std::make_shared<T>(std::forward<A>(a)...);
  }
};
template <class N>
struct MakeNode<c10::intrusive_ptr<N>> {
  template <class T, class... A>
  static c10::intrusive_ptr<T> make(A&&... a) {
    return c10::make_intrusive<T>(std::forward<A>(a)...);
  }
};

// One op's formula, from its two schemas.
struct Spec {
  enum Kind { kGrad, kInput, kOutput, kValue };
  struct Arg {
    Kind kind;
    size_t index;  // kGrad, kOutput: the output; kInput: the forward argument
    c10::IValue value;  // kValue: the backward schema's default
    bool optional = false;  // kGrad: Tensor?, None when the output got no gradient
  };
  std::string node_name;
  c10::OperatorHandle backward;
  size_t n_in = 0, n_out = 0;
  std::vector<Arg> args;  // one per backward argument
  std::vector<size_t> slot;  // output -> its place among the node's inputs (differentiable ones)
  std::vector<bool> differentiable;  // per output
  std::vector<size_t> edge_arg;  // node output i: the forward argument it is the gradient of
  std::vector<size_t> result;  // node output i: its place among the backward op's results

  explicit Spec(c10::OperatorHandle bwd) : backward(std::move(bwd)) {}
};

struct Backward final : ag::Node {
  std::shared_ptr<const Spec> spec;
  std::vector<ag::SavedVariable> saved;  // per backward argument that is a saved tensor
  std::vector<c10::IValue> value;  // per backward argument that is a saved non-tensor
  std::vector<char> is_tensor;

  explicit Backward(std::shared_ptr<const Spec> s)
      : spec(std::move(s)), saved(spec->args.size()), value(spec->args.size()), is_tensor(spec->args.size(), 0) {}

  std::string name() const override { return spec->node_name; }

  void release_variables() override {
    for (auto& v : saved) v.reset_data();
  }

  ag::variable_list apply(ag::variable_list&& grads) override {
    const Spec& s = *spec;
    torch::jit::Stack stack;
    stack.reserve(s.args.size());
    for (size_t i = 0; i < s.args.size(); ++i) {
      const Spec::Arg& a = s.args[i];
      if (a.kind == Spec::kGrad) {
        // set_materialize_grads(False): an output that got no gradient costs a zeros only here,
        // where the backward op reads it, and none where it takes None
        const size_t k = s.slot[a.index];
        if (grads[k].defined())
          stack.emplace_back(std::move(grads[k]));
        else if (a.optional)
          stack.emplace_back(c10::IValue());
        else
          stack.emplace_back(input_metadata(k).zeros_like());
      } else if (a.kind == Spec::kValue) {
        stack.emplace_back(a.value);
      } else if (is_tensor[i]) {
        stack.emplace_back(saved[i].unpack(a.kind == Spec::kOutput ? getptr() : NodePtr()));
      } else {
        stack.emplace_back(value[i]);
      }
    }
    if (at::GradMode::is_enabled()) {
      s.backward.callBoxed(stack);  // create_graph: through the backward op's own autograd
    } else {
      at::AutoDispatchBelowAutograd below;
      s.backward.callBoxed(stack);
    }
    ag::variable_list out(num_outputs());
    for (size_t i = 0; i < out.size(); ++i) {
      if (should_compute_output(i)) out[i] = stack[s.result[i]].toTensor();
    }
    return out;
  }
};

struct AutogradKernel final : c10::OperatorKernel {
  std::shared_ptr<const Spec> spec;
  explicit AutogradKernel(std::shared_ptr<const Spec> s) : spec(std::move(s)) {}

  void operator()(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
    const Spec& s = *spec;
    bool grad = false;
    if (at::GradMode::is_enabled()) {
      const auto args = torch::jit::last(*stack, s.n_in);
      for (size_t p : s.edge_arg) {
        if (args[p].isTensor() && args[p].toTensor().requires_grad()) {
          grad = true;
          break;
        }
      }
    }
    std::vector<c10::IValue> inputs;
    if (grad) {
      const auto args = torch::jit::last(*stack, s.n_in);
      inputs.assign(args.begin(), args.end());
    }
    {
      at::AutoDispatchBelowADInplaceOrView below;
      op.redispatchBoxed(keys & c10::after_ADInplaceOrView_keyset, stack);
    }
    if (!grad) return;
    auto node = MakeNode<NodePtr>::template make<Backward>(spec);
    ag::variable_list sources;
    sources.reserve(s.edge_arg.size());
    for (size_t p : s.edge_arg) sources.push_back(inputs[p].isTensor() ? inputs[p].toTensor() : at::Tensor());
    node->set_next_edges(ag::collect_next_edges(sources));
    const auto outs = torch::jit::last(*stack, s.n_out);
    const NodePtr base = node;
    for (size_t k = 0; k < s.n_out; ++k) {
      if (s.differentiable[k]) ag::set_history(outs[k].toTensor(), base);
    }
    // Outputs are saved after set_history, as outputs: the node does not keep itself alive.
    for (size_t i = 0; i < s.args.size(); ++i) {
      const Spec::Arg& a = s.args[i];
      if (a.kind != Spec::kInput && a.kind != Spec::kOutput) continue;
      const c10::IValue& v = a.kind == Spec::kInput ? inputs[a.index] : outs[a.index];
      if (v.isTensor()) {
        node->is_tensor[i] = 1;
        node->saved[i] = ag::SavedVariable(v.toTensor(), a.kind == Spec::kOutput);
      } else {
        node->value[i] = v;
      }
    }
  }
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

size_t find(const std::vector<std::string>& names, const std::string& name) {
  return static_cast<size_t>(std::find(names.begin(), names.end(), name) - names.begin());
}

}  // namespace

std::string install_autograd(const std::string& text) {
  static std::mutex mutex;
  static auto* installed = new std::set<std::string>();
  // Never destroyed: a registration dropped at exit would unregister kernels others may still use.
  static auto* libraries = new std::vector<std::unique_ptr<torch::Library>>();
  try {
    std::vector<std::string> parts(3);
    {
      size_t start = 0;
      for (size_t f = 0; f < 3; ++f) {  // keep empty fields: an op may have no output names
        const size_t end = text.find(';', start);
        parts[f] = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
        start = end == std::string::npos ? text.size() : end + 1;
      }
    }
    const std::string& name = parts[0];
    const auto outputs = split(parts[1], ',');
    const auto grad_inputs = split(parts[2], ',');
    const std::string ns = PK_STR(PK_LIBRARY);
    auto& dispatcher = c10::Dispatcher::singleton();
    const auto fwd = dispatcher.findSchema({ns + "::" + name, ""});
    const auto bwd = dispatcher.findSchema({ns + "::" + name + "_backward", ""});
    if (!fwd || !bwd) return "no op " + ns + "::" + name + " with a backward op";
    const auto& fs = fwd->schema();
    const auto& bs = bwd->schema();
    if (fs.returns().size() != outputs.size()) return name + ": " + std::to_string(fs.returns().size()) + " outputs, named " + parts[1];
    if (bs.returns().size() != grad_inputs.size()) return name + "_backward returns one gradient per grad_input";
    std::vector<std::string> in_names;
    for (const auto& a : fs.arguments()) in_names.push_back(a.name());

    auto spec = std::make_shared<Spec>(*bwd);
    spec->node_name = name + "Backward";
    spec->n_in = in_names.size();
    spec->n_out = outputs.size();
    spec->differentiable.assign(outputs.size(), false);
    for (const auto& a : bs.arguments()) {
      const std::string& n = a.name();
      const size_t out = n.rfind("grad_", 0) == 0 ? find(outputs, n.substr(5)) : outputs.size();
      if (out < outputs.size()) {
        spec->args.push_back({Spec::kGrad, out, {}, a.type()->kind() == c10::TypeKind::OptionalType});
        spec->differentiable[out] = true;
      } else if (find(outputs, n) < outputs.size()) {
        spec->args.push_back({Spec::kOutput, find(outputs, n), {}});
      } else if (find(in_names, n) < in_names.size()) {
        spec->args.push_back({Spec::kInput, find(in_names, n), {}});
      } else if (a.default_value()) {
        spec->args.push_back({Spec::kValue, 0, *a.default_value()});
      } else {
        return name + "_backward's argument " + n + " is no input or output of " + name + " and has no default";
      }
    }
    spec->slot.assign(outputs.size(), 0);
    for (size_t k = 0, n = 0; k < outputs.size(); ++k) {
      if (spec->differentiable[k]) spec->slot[k] = n++;
    }
    for (size_t p = 0; p < in_names.size(); ++p) {
      const size_t r = find(grad_inputs, in_names[p]);
      if (r == grad_inputs.size()) continue;
      spec->edge_arg.push_back(p);
      spec->result.push_back(r);
    }
    if (spec->edge_arg.size() != grad_inputs.size()) return name + ": a grad_input is no argument";

    std::lock_guard<std::mutex> lock(mutex);
    if (installed->count(name)) return "";  // after the checks: a bad spec is refused either way
    auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, ns, c10::DispatchKey::Autograd, __FILE__,
                                                static_cast<uint32_t>(__LINE__));
    lib->impl(name.c_str(), torch::CppFunction::makeFromBoxedFunctor(std::make_unique<AutogradKernel>(spec)));
    libraries->push_back(std::move(lib));
    installed->insert(name);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace pixelkernels
