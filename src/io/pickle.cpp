#include "io/pickle.hpp"

#include <cstring>
#include <set>
#include <unordered_map>

#include "core/error.hpp"

namespace ud2m {

// ---- PyValue ---------------------------------------------------------------

PyPtr PyValue::make(Kind kind) {
  auto v = std::make_shared<PyValue>();
  v->kind = kind;
  return v;
}
PyPtr PyValue::none() { return make(Kind::None); }
PyPtr PyValue::of_bool(bool b) {
  auto v = make(Kind::Bool);
  v->boolean = b;
  return v;
}
PyPtr PyValue::of_int(int64_t i) {
  auto v = make(Kind::Int);
  v->integer = i;
  return v;
}
PyPtr PyValue::of_float(double d) {
  auto v = make(Kind::Float);
  v->number = d;
  return v;
}
PyPtr PyValue::of_string(std::string s) {
  auto v = make(Kind::String);
  v->text = std::move(s);
  return v;
}
PyPtr PyValue::of_bytes(std::string s) {
  auto v = make(Kind::Bytes);
  v->text = std::move(s);
  return v;
}
PyPtr PyValue::of_tensor(torch::Tensor t) {
  auto v = make(Kind::Tensor);
  v->tensor = std::move(t);
  return v;
}

PyPtr PyValue::get(std::string_view key) const {
  for (auto it = entries.rbegin(); it != entries.rend(); ++it)  // the last write of a key wins
    if (it->first->is(Kind::String) && it->first->text == key) return it->second;
  return nullptr;
}

std::string py_repr(const PyValue& v, int max_depth) {
  using K = PyValue::Kind;
  if (max_depth <= 0) return "...";
  auto seq = [&](const char* open, const char* close) {
    std::string s = open;
    for (size_t i = 0; i < v.items.size(); ++i) s += (i ? ", " : "") + py_repr(*v.items[i], max_depth - 1);
    if (v.is(K::Tuple) && v.items.size() == 1) s += ",";
    return s + close;
  };
  switch (v.kind) {
    case K::None: return "None";
    case K::Bool: return v.boolean ? "True" : "False";
    case K::Int: return std::to_string(v.integer);
    case K::BigInt: {
      std::string hex = "0x";  // little-endian two's complement; shown as unsigned hex
      for (auto it = v.text.rbegin(); it != v.text.rend(); ++it) hex += fmt::format("{:02x}", static_cast<unsigned char>(*it));
      return hex;
    }
    case K::Float: return fmt::format("{}", v.number);
    case K::String: return v.text;
    case K::Bytes: return fmt::format("<{} bytes>", v.text.size());
    case K::List: return seq("[", "]");
    case K::Tuple: return seq("(", ")");
    case K::Set: return seq("{", "}");
    case K::Dict: {
      std::string s = "{";
      for (size_t i = 0; i < v.entries.size(); ++i)
        s += (i ? ", " : "") + py_repr(*v.entries[i].first, max_depth - 1) + ": " +
             py_repr(*v.entries[i].second, max_depth - 1);
      return s + "}";
    }
    case K::Tensor: return fmt::format("<tensor {}>", c10::toString(v.tensor.scalar_type()));
    case K::Storage: return "<storage>";
    case K::Global: return v.text;
    case K::Record: return "<" + v.text + " object>";
  }
  return "?";
}

namespace {

using K = PyValue::Kind;

// ---- always-allowed plain-data globals ---------------------------------------

PyPtr make_set(const std::vector<PyPtr>& args, const std::string& file) {
  auto s = PyValue::make(K::Set);
  if (args.empty()) return s;
  UD2M_CHECK(args[0]->is(K::List) || args[0]->is(K::Tuple) || args[0]->is(K::Set),
             "'{}' is corrupt: set() is given a {} instead of a list", file, py_repr(*args[0], 1));
  s->items = args[0]->items;
  return s;
}

PyPtr make_ordered_dict(const std::vector<PyPtr>& args, const std::string& file) {
  auto d = PyValue::make(K::Dict);
  if (args.empty()) return d;
  // OrderedDict([(k, v), ...]) — pickle normally uses SETITEMS instead; Python 2
  // pickles the items as [k, v] lists (e.g. the lpips package's weights/v0.1 files).
  UD2M_CHECK(args[0]->is(K::List) || args[0]->is(K::Tuple), "'{}' is corrupt: OrderedDict() is given {}", file,
             py_repr(*args[0], 1));
  for (auto& pair : args[0]->items) {
    UD2M_CHECK((pair->is(K::Tuple) || pair->is(K::List)) && pair->items.size() == 2,
               "'{}' is corrupt: OrderedDict() item is not a pair", file);
    d->entries.emplace_back(pair->items[0], pair->items[1]);
  }
  return d;
}

// Protocol-2 pickles from Python 3 store bytes as _codecs.encode(text, 'latin1').
PyPtr codecs_encode(const std::vector<PyPtr>& args, const std::string& file) {
  UD2M_CHECK(args.size() == 2 && args[0]->is(K::String) && args[1]->is(K::String) &&
                 (args[1]->text == "latin1" || args[1]->text == "latin-1"),
             "refusing to load '{}': it calls '_codecs.encode' with arguments a checkpoint never uses", file);
  std::string out;  // UTF-8 -> latin-1 code points
  const auto& s = args[0]->text;
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      UD2M_CHECK((c & 0xE0) == 0xC0 && i + 1 < s.size() && c <= 0xC3, "'{}' is corrupt: bad latin-1 bytes", file);
      out += static_cast<char>(((c & 0x1F) << 6) | (static_cast<unsigned char>(s[++i]) & 0x3F));
    }
  }
  return PyValue::of_bytes(out);
}

const PyGlobals& builtin_globals() {
  static const PyGlobals globals = {
      {"collections.OrderedDict", {make_ordered_dict}},
      {"builtins.set", {make_set}},
      {"builtins.frozenset", {make_set}},
      {"_codecs.encode", {codecs_encode}},
  };
  return globals;
}

// Modules no honest pickle names, refused even in opaque mode (where a record
// would be inert anyway): a file naming them is an attack, and should read as one.
bool is_dangerous_module(const std::string& module) {
  static const std::set<std::string> kModules = {
      "os",      "posix",  "nt",   "sys",    "subprocess", "builtins", "shutil",          "socket",
      "importlib", "runpy", "pickle", "_pickle", "marshal",  "ctypes",   "pty",             "code",
      "codeop",  "webbrowser", "operator", "signal", "io",   "_io",      "multiprocessing", "tempfile"};
  return kModules.count(module.substr(0, module.find('.'))) > 0;
}

// Python 2 spellings still written by protocol-2 pickles.
std::string normalize_module(const std::string& module) {
  if (module == "__builtin__") return "builtins";
  if (module == "copy_reg") return "copyreg";
  return module;
}

// ---- the machine ---------------------------------------------------------------

class Unpickler {
 public:
  Unpickler(std::string_view bytes, const std::string& file, const UnpickleOptions& options, size_t offset)
      : bytes_(bytes), file_(file), options_(options), pos_(offset) {}

  UnpickleResult run() {
    for (;;) {
      const size_t at = pos_;
      const auto op = u8();
      if (op == '.') {  // STOP
        UD2M_CHECK(stack_.size() == 1 && marks_.empty(), "'{}' is corrupt: the pickle ends with {} values on its stack",
                   file_, stack_.size());
        return {stack_.back(), pos_};
      }
      step(op, at);
    }
  }

 private:
  // -- reading raw bytes; every read is bounds-checked so truncation is an Error
  void need(uint64_t n) {
    UD2M_CHECK(n <= bytes_.size() - pos_, "'{}' is truncated or corrupt: its pickle ends unexpectedly at byte {}",
               file_, bytes_.size());
  }
  uint8_t u8() {
    need(1);
    return static_cast<uint8_t>(bytes_[pos_++]);
  }
  uint64_t uint_le(int n) {
    need(n);
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(bytes_[pos_ + i]);
    pos_ += n;
    return v;
  }
  std::string take(uint64_t n) {
    need(n);
    std::string s(bytes_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  std::string line() {  // text operands (GLOBAL, INST) end with '\n'
    auto end = bytes_.find('\n', pos_);
    UD2M_CHECK(end != std::string_view::npos && end - pos_ < 1024, "'{}' is corrupt: unterminated text in its pickle",
               file_);
    std::string s(bytes_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }

  // -- the stack
  void push(PyPtr v) { stack_.push_back(std::move(v)); }
  PyPtr pop() {
    UD2M_CHECK(stack_.size() > floor(), "'{}' is corrupt: its pickle pops an empty stack", file_);
    auto v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  // Values below the last MARK are out of reach, as in Python's unpickler.
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  PyPtr& top() {
    UD2M_CHECK(stack_.size() > floor(), "'{}' is corrupt: its pickle reads an empty stack", file_);
    return stack_.back();
  }
  std::vector<PyPtr> pop_mark() {  // everything pushed since the last MARK
    UD2M_CHECK(!marks_.empty(), "'{}' is corrupt: its pickle has no MARK where one is needed", file_);
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyPtr> items(std::make_move_iterator(stack_.begin() + m), std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }
  PyPtr tuple(std::vector<PyPtr> items) {
    auto t = PyValue::make(K::Tuple);
    t->items = std::move(items);
    return t;
  }

  // -- memo
  void memo_put(uint64_t index) { memo_[index] = top(); }
  PyPtr memo_get(uint64_t index) {
    auto it = memo_.find(index);
    UD2M_CHECK(it != memo_.end(), "'{}' is corrupt: its pickle reads memo entry {} that was never written", file_, index);
    return it->second;
  }

  // -- globals: the one place a name becomes meaning
  PyPtr resolve(const std::string& module, const std::string& name) {
    std::string full = normalize_module(module) + "." + name;
    const PyGlobal* found = nullptr;
    if (auto it = builtin_globals().find(full); it != builtin_globals().end()) found = &it->second;
    if (!found && options_.globals)
      if (auto it = options_.globals->find(full); it != options_.globals->end()) found = &it->second;
    auto g = PyValue::make(K::Global);
    g->text = full;
    if (found) {
      g->dtype = found->dtype;
      g->global = found;
      return g;
    }
    const bool dangerous = is_dangerous_module(normalize_module(module));
    if (!options_.opaque_records || dangerous) {
      // A class from a model library (torch.nn.*, the user's code) means a whole
      // pickled object rather than its weights: say how to get the weights.
      fail("refusing to load '{}': it asks to call '{}', which a checkpoint never needs (ud2m runs no code from "
           "model files){}",
           file_, full,
           dangerous ? "" : "; if it holds a whole pickled model object, save its state_dict() instead");
    }
    return g;  // opaque: an unknown class, kept as a name
  }

  // Applies callable `f` (an allowed global) to `args`; REDUCE, NEWOBJ, INST, OBJ.
  PyPtr call(const PyPtr& f, std::vector<PyPtr> args) {
    UD2M_CHECK(f->is(K::Global), "'{}' is corrupt: its pickle calls {}, which is not a function", file_,
               py_repr(*f, 2));
    if (f->global) {
      UD2M_CHECK(static_cast<bool>(f->global->call),
                 "refusing to load '{}': it asks to call '{}', which a checkpoint never needs", file_, f->text);
      return f->global->call(args, file_);
    }
    // Only reachable in opaque mode: remember the class and its arguments.
    auto r = PyValue::make(K::Record);
    r->text = f->text;
    r->items = std::move(args);
    return r;
  }

  std::vector<PyPtr> args_of(const PyPtr& t) {
    UD2M_CHECK(t->is(K::Tuple), "'{}' is corrupt: its pickle passes {} as an argument tuple", file_, py_repr(*t, 2));
    return t->items;
  }

  // Appends without looking for an equal key: a scan would make a crafted
  // pickle with millions of keys quadratic. Readers take the last entry of a
  // key (PyValue::get, the flattener), which is Python's dict semantics.
  void set_item(PyValue& dict, PyPtr key, PyPtr value) {
    // Records: instances of dict subclasses (EasyDict, ...) in opaque mode.
    UD2M_CHECK(dict.is(K::Dict) || dict.is(K::Record), "'{}' is corrupt: its pickle sets an item on {}", file_,
               py_repr(dict, 1));
    dict.entries.emplace_back(std::move(key), std::move(value));
  }

  void build(PyValue& obj, PyPtr state) {
    // Records keep their state (or an allowed class decodes it); on anything
    // else (a tensor subclass's __dict__, an OrderedDict's attributes) the
    // state has no meaning for weights: dropped.
    if (!obj.is(K::Record)) return;
    if (obj.global && obj.global->build)
      obj.global->build(obj, state, file_);
    else
      obj.state = std::move(state);
  }

  void step(uint8_t op, size_t at) {
    switch (op) {
      case 0x80: u8(); break;           // PROTO
      case 0x95: uint_le(8); break;     // FRAME: framing is only a read-ahead hint
      case '(': marks_.push_back(stack_.size()); break;  // MARK
      case '0': pop(); break;           // POP
      case '1': pop_mark(); break;      // POP_MARK
      case '2': push(top()); break;     // DUP
      case 'N': push(PyValue::none()); break;
      case 0x88: push(PyValue::of_bool(true)); break;
      case 0x89: push(PyValue::of_bool(false)); break;
      case 'J': push(PyValue::of_int(static_cast<int32_t>(uint_le(4)))); break;  // BININT
      case 'K': push(PyValue::of_int(uint_le(1))); break;                        // BININT1
      case 'M': push(PyValue::of_int(uint_le(2))); break;                        // BININT2
      case 0x8a: push(long_int(uint_le(1))); break;                              // LONG1
      case 0x8b: push(long_int(signed_size(uint_le(4)))); break;                 // LONG4
      case 'G': {                                                                 // BINFLOAT: big-endian
        need(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | static_cast<uint8_t>(bytes_[pos_ + i]);
        pos_ += 8;
        double d;
        std::memcpy(&d, &bits, 8);
        push(PyValue::of_float(d));
        break;
      }
      case 'X': push(PyValue::of_string(take(uint_le(4)))); break;   // BINUNICODE
      case 0x8c: push(PyValue::of_string(take(uint_le(1)))); break;  // SHORT_BINUNICODE
      case 0x8d: push(PyValue::of_string(take(uint_le(8)))); break;  // BINUNICODE8
      case 'T': push(PyValue::of_string(take(signed_size(uint_le(4))))); break;  // BINSTRING (py2 str)
      case 'U': push(PyValue::of_string(take(uint_le(1)))); break;               // SHORT_BINSTRING
      case 'C': push(PyValue::of_bytes(take(uint_le(1)))); break;    // SHORT_BINBYTES
      case 'B': push(PyValue::of_bytes(take(uint_le(4)))); break;    // BINBYTES
      case 0x8e: push(PyValue::of_bytes(take(uint_le(8)))); break;   // BINBYTES8
      case 0x96: push(PyValue::of_bytes(take(uint_le(8)))); break;   // BYTEARRAY8
      case '}': push(PyValue::make(K::Dict)); break;   // EMPTY_DICT
      case ']': push(PyValue::make(K::List)); break;   // EMPTY_LIST
      case ')': push(tuple({})); break;                // EMPTY_TUPLE
      case 0x8f: push(PyValue::make(K::Set)); break;   // EMPTY_SET
      case 't': push(tuple(pop_mark())); break;        // TUPLE
      case 0x85: { auto a = pop(); push(tuple({a})); break; }                         // TUPLE1
      case 0x86: { auto b = pop(), a = pop(); push(tuple({a, b})); break; }          // TUPLE2
      case 0x87: { auto c = pop(), b = pop(), a = pop(); push(tuple({a, b, c})); break; }  // TUPLE3
      case 'l': { auto l = PyValue::make(K::List); l->items = pop_mark(); push(l); break; }  // LIST
      case 'd': {                                                                          // DICT
        auto items = pop_mark();
        UD2M_CHECK(items.size() % 2 == 0, "'{}' is corrupt: DICT with an odd number of items", file_);
        auto d = PyValue::make(K::Dict);
        for (size_t i = 0; i < items.size(); i += 2) set_item(*d, items[i], items[i + 1]);
        push(d);
        break;
      }
      case 0x91: { auto s = PyValue::make(K::Set); s->items = pop_mark(); push(s); break; }  // FROZENSET
      case 'a': {  // APPEND
        auto v = pop();
        append_to(top(), {v});
        break;
      }
      case 'e': {  // APPENDS
        auto items = pop_mark();
        append_to(top(), std::move(items));
        break;
      }
      case 0x90: {  // ADDITEMS
        auto items = pop_mark();
        UD2M_CHECK(top()->is(K::Set), "'{}' is corrupt: ADDITEMS on a non-set", file_);
        for (auto& i : items) top()->items.push_back(i);
        break;
      }
      case 's': {  // SETITEM
        auto v = pop(), k = pop();
        set_item(*top(), k, v);
        break;
      }
      case 'u': {  // SETITEMS
        auto items = pop_mark();
        UD2M_CHECK(items.size() % 2 == 0, "'{}' is corrupt: SETITEMS with an odd number of items", file_);
        for (size_t i = 0; i < items.size(); i += 2) set_item(*top(), items[i], items[i + 1]);
        break;
      }
      case 'q': memo_put(uint_le(1)); break;        // BINPUT
      case 'r': memo_put(uint_le(4)); break;        // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); break;     // MEMOIZE
      case 'h': push(memo_get(uint_le(1))); break;  // BINGET
      case 'j': push(memo_get(uint_le(4))); break;  // LONG_BINGET
      case 'c': {                                   // GLOBAL "module\nname\n"
        auto module = line();
        auto name = line();
        push(resolve(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        auto name = pop(), module = pop();
        UD2M_CHECK(module->is(K::String) && name->is(K::String), "'{}' is corrupt: STACK_GLOBAL needs two strings",
                   file_);
        push(resolve(module->text, name->text));
        break;
      }
      case 'R': {  // REDUCE: f(*args)
        auto args = pop();
        auto f = pop();
        push(call(f, args_of(args)));
        break;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args)
        auto args = pop();
        auto cls = pop();
        push(call(cls, args_of(args)));
        break;
      }
      case 0x92: {  // NEWOBJ_EX: keyword arguments are not used by anything allowed
        auto kwargs = pop();
        auto args = pop();
        auto cls = pop();
        push(call(cls, args_of(args)));
        break;
      }
      case 'i': {  // INST "module\nname\n": class from text, args since MARK
        auto module = line();
        auto name = line();
        auto cls = resolve(module, name);
        push(call(cls, pop_mark()));
        break;
      }
      case 'o': {  // OBJ: MARK cls args...
        auto items = pop_mark();
        UD2M_CHECK(!items.empty(), "'{}' is corrupt: OBJ without a class", file_);
        auto cls = items.front();
        items.erase(items.begin());
        push(call(cls, std::move(items)));
        break;
      }
      case 'b': {  // BUILD
        auto state = pop();
        build(*top(), std::move(state));
        break;
      }
      case 'Q': {  // BINPERSID: torch's storages
        auto id = pop();
        UD2M_CHECK(static_cast<bool>(options_.persistent_load),
                   "'{}' is not a checkpoint ud2m can read: its pickle refers to external objects", file_);
        push(options_.persistent_load(id));
        break;
      }
      case 0x82: case 0x83: case 0x84:  // EXT1/2/4: the copyreg extension registry names globals by number
        fail("refusing to load '{}': its pickle names a global through the extension registry (opcode 0x{:02x})",
             file_, op);
      default:
        fail("'{}' is corrupt or not a checkpoint ud2m can read: unsupported pickle opcode 0x{:02x} at byte {}",
             file_, op, at);
    }
  }

  void append_to(const PyPtr& list, std::vector<PyPtr> items) {
    // Records: instances of list subclasses in opaque mode; items join their args.
    UD2M_CHECK(list->is(K::List) || list->is(K::Record), "'{}' is corrupt: its pickle appends to {}", file_,
               py_repr(*list, 1));
    for (auto& i : items) list->items.push_back(std::move(i));
  }

  uint64_t signed_size(uint64_t raw) {
    UD2M_CHECK(raw < 0x80000000u, "'{}' is corrupt: negative length in its pickle", file_);
    return raw;
  }

  // LONG1/LONG4: little-endian two's complement of any length.
  PyPtr long_int(uint64_t n) {
    auto raw = take(n);
    if (n == 0) return PyValue::of_int(0);
    if (n <= 8) {
      uint64_t v = 0;
      for (size_t i = n; i-- > 0;) v = (v << 8) | static_cast<uint8_t>(raw[i]);
      if (n < 8 && (static_cast<uint8_t>(raw[n - 1]) & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
      return PyValue::of_int(static_cast<int64_t>(v));
    }
    auto big = PyValue::make(K::BigInt);
    big->text = std::move(raw);
    return big;
  }

  std::string_view bytes_;
  const std::string& file_;
  const UnpickleOptions& options_;
  size_t pos_;
  std::vector<PyPtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyPtr> memo_;
};

}  // namespace

UnpickleResult unpickle(std::string_view bytes, const std::string& file, const UnpickleOptions& options,
                        size_t offset) {
  UD2M_CHECK(offset <= bytes.size(), "'{}' is truncated: a pickle should start at byte {}", file, offset);
  return Unpickler(bytes, file, options, offset).run();
}

}  // namespace ud2m
