#include "io/numpy_globals.hpp"

#include <cstring>

#include "core/error.hpp"
#include "io/torch_globals.hpp"

namespace ud2m {
namespace {

using K = PyValue::Kind;

struct NumpyType {
  torch::ScalarType dtype;
  bool big_endian;
};

// A numpy.dtype record: args ('f8', False, True), BUILD state (3, '<', ...).
NumpyType numpy_type(const PyPtr& d, const std::string& file) {
  UD2M_CHECK(d->is(K::Record) && d->text == "numpy.dtype" && !d->items.empty() && d->items[0]->is(K::String),
             "'{}' is corrupt: a numpy value has dtype {}", file, py_repr(*d, 2));
  static const std::pair<const char*, torch::ScalarType> kCodes[] = {
      {"f2", torch::kFloat16}, {"f4", torch::kFloat32}, {"f8", torch::kFloat64}, {"i1", torch::kInt8},
      {"i2", torch::kInt16},   {"i4", torch::kInt32},   {"i8", torch::kInt64},   {"u1", torch::kUInt8},
      {"b1", torch::kBool},    {"c8", torch::kComplexFloat}, {"c16", torch::kComplexDouble},
  };
  std::string code = d->items[0]->text;
  if (!code.empty() && (code[0] == '<' || code[0] == '>' || code[0] == '|' || code[0] == '=')) code.erase(0, 1);
  bool big = false;
  if (d->state && d->state->is(K::Tuple) && d->state->items.size() > 1 && d->state->items[1]->is(K::String))
    big = d->state->items[1]->text == ">";
  for (auto& [name, dtype] : kCodes)
    if (code == name) return {dtype, big};
  fail("'{}' holds a numpy value of dtype '{}', which ud2m does not read", file, code);
}

// `raw` as a 1-D tensor of `type`, in native byte order.
torch::Tensor decode(const std::string& raw, NumpyType type, const std::string& file) {
  const size_t elem = c10::elementSize(type.dtype);
  UD2M_CHECK(raw.size() % elem == 0, "'{}' is corrupt: numpy data of {} bytes for {}-byte elements", file, raw.size(),
             elem);
  auto bytes = torch::empty({static_cast<int64_t>(raw.size())}, torch::kUInt8);
  if (!raw.empty()) std::memcpy(bytes.data_ptr(), raw.data(), raw.size());
  if (type.big_endian) byteswap_storage(bytes, type.dtype);
  return bytes.view(type.dtype);
}

PyPtr make_dtype(const std::vector<PyPtr>& args, const std::string&) {
  auto d = PyValue::make(K::Record);
  d->text = "numpy.dtype";
  d->items = args;
  return d;
}

// scalar(dtype, bytes) -> a Python number
PyPtr make_scalar(const std::vector<PyPtr>& args, const std::string& file) {
  UD2M_CHECK(args.size() == 2 && args[1]->is(K::Bytes), "'{}' is corrupt: bad numpy scalar", file);
  auto type = numpy_type(args[0], file);
  auto t = decode(args[1]->text, type, file);
  UD2M_CHECK(t.numel() == 1, "'{}' is corrupt: a numpy scalar holds {} values", file, t.numel());
  if (type.dtype == torch::kBool) return PyValue::of_bool(t.item<bool>());
  if (c10::isIntegralType(type.dtype, false)) return PyValue::of_int(t.item<int64_t>());
  UD2M_CHECK(!c10::isComplexType(type.dtype), "'{}' holds a complex numpy scalar, which ud2m does not read", file);
  return PyValue::of_float(t.item<double>());
}

// BUILD of an ndarray: state (version, shape, dtype, is_fortran, raw bytes).
void build_array(PyValue& array, const PyPtr& state, const std::string& file) {
  UD2M_CHECK(state->is(K::Tuple) && state->items.size() == 5, "'{}' is corrupt: bad numpy array state", file);
  auto& s = state->items;
  UD2M_CHECK(s[4]->is(K::Bytes), "'{}' holds a numpy array of Python objects, which ud2m does not read", file);
  UD2M_CHECK(s[1]->is(K::Tuple), "'{}' is corrupt: a numpy array's shape is {}", file, py_repr(*s[1], 1));
  std::vector<int64_t> shape;
  int64_t numel = 1;
  for (auto& d : s[1]->items) {
    UD2M_CHECK(d->is(K::Int) && d->integer >= 0 && !__builtin_mul_overflow(numel, d->integer, &numel),
               "'{}' is corrupt: a numpy array's shape is {}", file, py_repr(*s[1], 1));
    shape.push_back(d->integer);
  }
  auto flat = decode(s[4]->text, numpy_type(s[2], file), file);
  UD2M_CHECK(flat.numel() == numel, "'{}' is corrupt: a numpy array of shape {} has {} values", file,
             py_repr(*s[1], 1), flat.numel());
  torch::Tensor t;
  if (s[3]->is(K::Bool) && s[3]->boolean) {  // Fortran order: the reversed shape, transposed
    std::vector<int64_t> reversed(shape.rbegin(), shape.rend()), dims;
    for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) dims.push_back(i);
    t = flat.reshape(reversed).permute(dims).contiguous();
  } else {
    t = flat.reshape(shape);
  }
  // The record becomes the tensor, in place: the memo may hold other references to it.
  array.kind = K::Tensor;
  array.tensor = t;
  array.items.clear();
  array.text.clear();
  array.global = nullptr;
}

const PyGlobal& ndarray_builder() {
  static const PyGlobal g{{}, torch::kFloat32, build_array};
  return g;
}

// _reconstruct(numpy.ndarray, (0,), b'b') -> an empty array that BUILD fills
PyPtr reconstruct(const std::vector<PyPtr>& args, const std::string& file) {
  UD2M_CHECK(!args.empty() && args[0]->is(K::Global) && args[0]->text == "numpy.ndarray",
             "'{}' is corrupt: numpy _reconstruct of {}", file, args.empty() ? "nothing" : py_repr(*args[0], 1));
  auto a = PyValue::make(K::Record);
  a->text = "numpy.ndarray";
  a->global = &ndarray_builder();
  return a;
}

PyGlobals make_numpy_globals() {
  PyGlobals g;
  g["numpy.dtype"] = {make_dtype};
  g["numpy.ndarray"] = {};
  for (const char* core : {"numpy.core.multiarray.", "numpy._core.multiarray."}) {
    g[std::string(core) + "scalar"] = {make_scalar};
    g[std::string(core) + "_reconstruct"] = {reconstruct};
  }
  return g;
}

}  // namespace

const PyGlobals& numpy_globals() {
  static const PyGlobals globals = make_numpy_globals();
  return globals;
}

}  // namespace ud2m
