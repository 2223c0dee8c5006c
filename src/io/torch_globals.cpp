#include "io/torch_globals.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "io/numpy_globals.hpp"
#include "io/torch_file.hpp"
#include "io/zip.hpp"

namespace ud2m {
namespace {

using K = PyValue::Kind;

// ints from a tuple/list argument (sizes, strides)
std::vector<int64_t> int_list(const PyPtr& v, const char* what, const std::string& file) {
  UD2M_CHECK(v->is(K::Tuple) || v->is(K::List), "'{}' is corrupt: tensor {} is {}, not a tuple", file, what,
             py_repr(*v, 2));
  std::vector<int64_t> out;
  for (auto& i : v->items) {
    UD2M_CHECK(i->is(K::Int), "'{}' is corrupt: tensor {} holds {}", file, what, py_repr(*i, 1));
    out.push_back(i->integer);
  }
  return out;
}

// A view of `storage` exactly as torch built it (shared storage, offsets and
// strides kept), after checking it lies inside the storage.
torch::Tensor view_of(const PyValue& storage, int64_t offset, const std::vector<int64_t>& size,
                      const std::vector<int64_t>& stride, torch::ScalarType dtype, const std::string& file) {
  UD2M_CHECK(storage.is(K::Storage), "'{}' is corrupt: a tensor is rebuilt from {}, not a storage", file,
             py_repr(storage, 1));
  UD2M_CHECK(size.size() == stride.size(), "'{}' is corrupt: a tensor has {} sizes but {} strides", file, size.size(),
             stride.size());
  const int64_t elem = static_cast<int64_t>(c10::elementSize(dtype));
  const int64_t nbytes = storage.tensor.numel();
  UD2M_CHECK(nbytes % elem == 0, "'{}' is corrupt: a storage of {} bytes does not hold whole {} elements", file,
             nbytes, c10::toString(dtype));
  const int64_t numel = nbytes / elem;
  // Highest element index the view touches; all arithmetic checked for overflow.
  bool empty = false;
  int64_t last = offset;
  bool ok = offset >= 0;
  for (size_t d = 0; d < size.size() && ok; ++d) {
    ok = size[d] >= 0 && stride[d] >= 0;
    if (size[d] == 0) empty = true;
    int64_t span = 0;
    if (ok && size[d] > 0) ok = !__builtin_mul_overflow(size[d] - 1, stride[d], &span) &&
                                !__builtin_add_overflow(last, span, &last);
  }
  UD2M_CHECK(ok && (empty || last < numel),
             "'{}' is corrupt: a tensor of shape {} (strides {}, offset {}) reaches outside its {}-element storage",
             file, fmt::join(size, "x"), fmt::join(stride, ","), offset, numel);
  auto typed = storage.tensor.view(dtype);
  return typed.as_strided(size, stride, empty ? 0 : offset);
}

int64_t int_arg(const PyPtr& v, const char* what, const std::string& file) {
  UD2M_CHECK(v->is(K::Int), "'{}' is corrupt: tensor {} is {}", file, what, py_repr(*v, 1));
  return v->integer;
}

// _rebuild_tensor(storage, offset, size, stride) and _v2 (+requires_grad,
// hooks, metadata): the tensor's dtype is the storage's.
PyPtr rebuild_tensor(const std::vector<PyPtr>& a, const std::string& file) {
  UD2M_CHECK(a.size() >= 4, "'{}' is corrupt: _rebuild_tensor gets {} arguments", file, a.size());
  return PyValue::of_tensor(view_of(*a[0], int_arg(a[1], "offset", file), int_list(a[2], "size", file),
                                    int_list(a[3], "stride", file), a[0]->dtype, file));
}

// _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, ...)
PyPtr rebuild_tensor_v3(const std::vector<PyPtr>& a, const std::string& file) {
  UD2M_CHECK(a.size() >= 7 && a[6]->is(K::Global), "'{}' is corrupt: bad _rebuild_tensor_v3 arguments", file);
  return PyValue::of_tensor(view_of(*a[0], int_arg(a[1], "offset", file), int_list(a[2], "size", file),
                                    int_list(a[3], "stride", file), a[6]->dtype, file));
}

// nn.Parameter is, for weights, just its data tensor.
PyPtr rebuild_parameter(const std::vector<PyPtr>& a, const std::string& file) {
  UD2M_CHECK(!a.empty() && a[0]->is(K::Tensor), "'{}' is corrupt: a Parameter is rebuilt from {}", file,
             a.empty() ? "nothing" : py_repr(*a[0], 1));
  return a[0];
}

// pickle.dump of a tensor (as in EDM2's network pickles) stores its storage as
// torch.storage._load_from_bytes(<a torch.save of that storage alone>).
PyPtr load_from_bytes(const std::vector<PyPtr>& a, const std::string& file) {
  UD2M_CHECK(a.size() == 1 && a[0]->is(K::Bytes), "'{}' is corrupt: _load_from_bytes gets {}", file,
             a.empty() ? "nothing" : py_repr(*a[0], 1));
  static thread_local bool inside = false;  // a stored storage holding another is no honest file
  UD2M_CHECK(!inside, "'{}' is corrupt: a stored storage holds another stored object", file);
  inside = true;
  struct Reset {
    ~Reset() { inside = false; }
  } reset;
  const std::string& bytes = a[0]->text;
  auto value = looks_like_zip(bytes) ? load_torch_zip(bytes, file) : load_torch_legacy(bytes, file);
  UD2M_CHECK(value->is(K::Storage), "'{}' is corrupt: _load_from_bytes gives {}, not a storage", file,
             py_repr(*value, 1));
  return value;
}

PyPtr torch_size(const std::vector<PyPtr>& a, const std::string& file) {
  auto t = PyValue::make(K::Tuple);
  if (!a.empty()) {
    int_list(a[0], "size", file);
    t->items = a[0]->items;
  }
  return t;
}

// torch.device('cuda', 0) -> "cuda:0": a string is all a checkpoint's metadata needs.
PyPtr torch_device(const std::vector<PyPtr>& a, const std::string& file) {
  UD2M_CHECK(!a.empty() && a[0]->is(K::String), "'{}' is corrupt: bad torch.device arguments", file);
  std::string s = a[0]->text;
  if (a.size() > 1 && a[1]->is(K::Int)) s = fmt::format("{}:{}", s, a[1]->integer);
  return PyValue::of_string(s);
}

PyGlobals make_torch_globals() {
  PyGlobals g;
  g["torch._utils._rebuild_tensor"] = {rebuild_tensor};
  g["torch._utils._rebuild_tensor_v2"] = {rebuild_tensor};
  g["torch._utils._rebuild_tensor_v3"] = {rebuild_tensor_v3};
  g["torch._utils._rebuild_parameter"] = {rebuild_parameter};
  g["torch._utils._rebuild_parameter_with_state"] = {rebuild_parameter};
  g["torch.storage._load_from_bytes"] = {load_from_bytes};
  g["torch.Size"] = {torch_size};
  g["torch.device"] = {torch_device};
  const std::pair<const char*, torch::ScalarType> storages[] = {
      {"Float", torch::kFloat32}, {"Double", torch::kFloat64}, {"Half", torch::kFloat16},
      {"BFloat16", torch::kBFloat16}, {"Long", torch::kInt64}, {"Int", torch::kInt32},
      {"Short", torch::kInt16},   {"Char", torch::kInt8},     {"Byte", torch::kUInt8},
      {"Bool", torch::kBool},     {"ComplexFloat", torch::kComplexFloat}, {"ComplexDouble", torch::kComplexDouble},
  };
  for (auto& [name, dtype] : storages) g[std::string("torch.") + name + "Storage"] = {{}, dtype};
  g["torch.UntypedStorage"] = {{}, torch::kUInt8};
  g["torch.storage.UntypedStorage"] = {{}, torch::kUInt8};
  const std::pair<const char*, torch::ScalarType> dtypes[] = {
      {"float32", torch::kFloat32}, {"float", torch::kFloat32},   {"float64", torch::kFloat64},
      {"double", torch::kFloat64},  {"float16", torch::kFloat16}, {"half", torch::kFloat16},
      {"bfloat16", torch::kBFloat16}, {"int64", torch::kInt64},   {"long", torch::kInt64},
      {"int32", torch::kInt32},     {"int", torch::kInt32},       {"int16", torch::kInt16},
      {"short", torch::kInt16},     {"int8", torch::kInt8},       {"uint8", torch::kUInt8},
      {"bool", torch::kBool},       {"complex64", torch::kComplexFloat}, {"complex128", torch::kComplexDouble},
      {"cfloat", torch::kComplexFloat}, {"cdouble", torch::kComplexDouble},
  };
  for (auto& [name, dtype] : dtypes) g[std::string("torch.") + name] = {{}, dtype};
  // numpy scalars and arrays appear in checkpoints' metadata and statistics.
  for (auto& [name, entry] : numpy_globals()) g[name] = entry;
  return g;
}

}  // namespace

const PyGlobals& torch_globals() {
  static const PyGlobals globals = make_torch_globals();
  return globals;
}

PyPtr make_storage(torch::Tensor bytes, torch::ScalarType dtype) {
  auto s = PyValue::make(K::Storage);
  s->tensor = std::move(bytes);
  s->dtype = dtype;
  return s;
}

void byteswap_storage(torch::Tensor& bytes, torch::ScalarType dtype) {
  // complex numbers swap each of their two parts
  const int64_t elem = static_cast<int64_t>(c10::elementSize(dtype)) / (c10::isComplexType(dtype) ? 2 : 1);
  if (elem == 1) return;
  auto* p = bytes.data_ptr<uint8_t>();
  for (int64_t i = 0; i + elem <= bytes.numel(); i += elem) std::reverse(p + i, p + i + elem);
}

}  // namespace ud2m
