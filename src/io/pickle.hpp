// A Python pickle reader that executes no code.
//
// A pickle is a program for a stack machine whose GLOBAL/REDUCE opcodes can call
// any importable Python function — which is how a malicious checkpoint runs
// `os.system`. This reader never imports or calls anything: a global is only a
// name, looked up in an allow-list of names whose effect ud2m implements itself
// (build a dict, rebuild a tensor from a storage, ...). Any other name is refused
// with an Error, unless the caller opts into "opaque records" (see below).
#pragma once
#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ud2m {

struct PyValue;
struct PyGlobal;
using PyPtr = std::shared_ptr<PyValue>;

// One unpickled Python object. A tagged struct rather than std::variant: the
// unpickler mutates containers in place (SETITEMS after MEMOIZE), and shared
// pointers give the aliasing pickle's memo needs.
struct PyValue {
  enum class Kind {
    None, Bool, Int, BigInt, Float, String, Bytes,
    List, Tuple, Dict, Set,
    Tensor,   // a rebuilt tensor (a view of a Storage)
    Storage,  // raw bytes of a torch storage, with its element dtype
    Global,   // an allowed (or, in opaque mode, unknown) class/function, by name
    Record,   // opaque mode: an instance of an unknown class (args + state)
  };
  Kind kind = Kind::None;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;
  std::string text;                              // String, Bytes, BigInt (LE bytes), Global/Record class name
  std::vector<PyPtr> items;                      // List, Tuple, Set, Record constructor args
  std::vector<std::pair<PyPtr, PyPtr>> entries;  // Dict (and Record of a dict subclass), in insertion order;
                                                 // a repeated key's last entry counts
  torch::Tensor tensor;                          // Tensor; Storage (1-D uint8 bytes)
  torch::ScalarType dtype = torch::kFloat32;     // Storage element type; Global naming a dtype
  PyPtr state;                                   // Record: what BUILD set
  const PyGlobal* global = nullptr;              // Global: its allow-list entry (null: opaque class);
                                                 // Record: the entry whose build hook BUILD applies

  static PyPtr none();
  static PyPtr of_bool(bool v);
  static PyPtr of_int(int64_t v);
  static PyPtr of_float(double v);
  static PyPtr of_string(std::string v);
  static PyPtr of_bytes(std::string v);
  static PyPtr of_tensor(torch::Tensor t);
  static PyPtr make(Kind kind);

  bool is(Kind k) const { return kind == k; }
  // The dict entry whose key is the string `key`, or null.
  PyPtr get(std::string_view key) const;
};

// Human-readable Python-like rendering of plain data (for metadata and errors).
std::string py_repr(const PyValue& value, int max_depth = 8);

// An allowed global that can be called (REDUCE/NEWOBJ/INST/OBJ). It receives the
// argument tuple's items and returns the result; `file` is for error messages.
using PyCallable = std::function<PyPtr(const std::vector<PyPtr>& args, const std::string& file)>;

struct PyGlobal {
  PyCallable call;  // empty: a value that may be named but not called (a dtype, a storage class)
  torch::ScalarType dtype = torch::kFloat32;  // for storage classes and dtype objects
  // BUILD (setstate) on a Record whose `global` is this entry; unset: the
  // record just keeps the state.
  std::function<void(PyValue& object, const PyPtr& state, const std::string& file)> build = nullptr;
};

// "module.name" -> what it means. The unpickler consults nothing else.
using PyGlobals = std::map<std::string, PyGlobal>;

struct UnpickleOptions {
  // Names the pickle may refer to, besides the plain-data ones the unpickler
  // always knows (collections.OrderedDict, builtins.set/frozenset, _codecs.encode).
  const PyGlobals* globals = nullptr;
  // Resolves BINPERSID ids (torch storages); refused if not set.
  std::function<PyPtr(const PyPtr& id)> persistent_load;
  // Off (default): an unknown global is refused. On: it becomes a Record whose
  // args and state are kept as data, so tensors inside full-object pickles
  // (EDM2-style) can still be found. Still executes nothing.
  bool opaque_records = false;
};

struct UnpickleResult {
  PyPtr value;
  size_t end = 0;  // offset just past the STOP opcode (legacy .pt holds several pickles in a row)
};

// Unpickles the pickle starting at `offset` in `bytes`. Throws Error naming
// `file` for a corrupt/truncated pickle or a refused global.
UnpickleResult unpickle(std::string_view bytes, const std::string& file, const UnpickleOptions& options,
                        size_t offset = 0);

}  // namespace ud2m
