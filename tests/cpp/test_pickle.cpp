// The safe unpickler: plain data decodes like Python's, and every attempt to
// reach a Python global outside the allow-list is refused without effect.
#include <chrono>
#include <filesystem>
#include <fstream>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "io/checkpoint.hpp"
#include "io/pickle.hpp"
#include "io/torch_globals.hpp"
#include "test_util.hpp"

using namespace ud2m;
using K = PyValue::Kind;

namespace {

// Pickles are written as hex (from Python's pickle.dumps(...).hex()): C++ string
// escapes would swallow the hex-looking bytes that follow them.
std::string hex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

PyPtr load(const std::string& bytes) {
  UnpickleOptions options;
  options.globals = &torch_globals();
  return unpickle(bytes, "test.pkl", options).value;
}

std::string refusal(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace

TEST(Pickle, DecodesPlainData) {
  // pickle.dumps({'a': [1, -2, 300, 70000, 2**40, -2**63], 'b': (1.5, None, True, False)}, protocol=2)
  auto v = load(hex("80027d71002858010000006171015d7102284b014afeffffff4d2c014a701101008a060000000000018a080000000000"
                    "00008065580100000062710328473ff80000000000004e8889747104752e"));
  ASSERT_TRUE(v->is(K::Dict));
  auto a = v->get("a");
  ASSERT_TRUE(a && a->is(K::List));
  std::vector<int64_t> ints;
  for (auto& i : a->items) ints.push_back(i->integer);
  EXPECT_EQ(ints, (std::vector<int64_t>{1, -2, 300, 70000, int64_t(1) << 40, INT64_MIN}));
  auto b = v->get("b");
  ASSERT_TRUE(b && b->is(K::Tuple) && b->items.size() == 4);
  EXPECT_EQ(b->items[0]->number, 1.5);
  EXPECT_TRUE(b->items[1]->is(K::None));
  EXPECT_TRUE(b->items[2]->boolean);
  EXPECT_FALSE(b->items[3]->boolean);
  EXPECT_EQ(py_repr(*b), "(1.5, None, True, False)");
  // pickle.dumps({'c': b'xy', 's': {1, 2}, 'big': 2**80}, protocol=4): frames, MEMOIZE, sets, bytes, LONG1
  auto w = load(hex("8004952d000000000000007d94288c01639443027879948c0173948f94284b014b02908c03626967948a0b000000000000"
                    "0000000001752e"));
  EXPECT_EQ(w->get("c")->text, "xy");
  EXPECT_TRUE(w->get("c")->is(K::Bytes));
  EXPECT_EQ(py_repr(*w->get("s")), "{1, 2}");
  EXPECT_EQ(py_repr(*w->get("big")), "0x0100000000000000000000");
}

TEST(Pickle, TruncatedPickleIsAnError) {
  std::string p = hex("80027d710058010000006171014b01732e");  // {'a': 1}
  EXPECT_TRUE(load(p)->is(K::Dict));
  for (size_t cut = 0; cut < p.size(); ++cut) EXPECT_THROW(load(p.substr(0, cut)), Error) << cut;
}

TEST(Pickle, UnknownOpcodeAndBadMemoAreErrors) {
  EXPECT_THROW(load(hex("8002ff2e")), Error);    // opcode 0xff
  EXPECT_THROW(load(hex("800268052e")), Error);  // BINGET of an unset memo slot
  EXPECT_THROW(load(hex("80022e")), Error);      // STOP on an empty stack
}

// Each malicious pickle from gen_checkpoints.py is refused, the error names the
// global it wanted, and its payload (creating a marker file) never ran.
TEST(Pickle, RefusesMaliciousGlobalsWithoutSideEffects) {
  auto dir = test::refs_dir("checkpoints");
  int cases = 0;
  for (auto& entry : std::filesystem::directory_iterator(dir)) {
    auto path = entry.path();
    if (path.extension() != ".global") continue;
    auto stem = path.stem().string();  // evil_<case>
    std::string global = read_file(path.string());
    auto pkl = dir / (stem + ".pkl");
    auto pt = dir / (stem + ".pt");
    std::string message;
    if (std::filesystem::exists(pkl)) {
      message = refusal([&] { load(read_file(pkl.string())); });
    } else {
      ASSERT_TRUE(std::filesystem::exists(pt)) << pt;
      message = refusal([&] { read_checkpoint(pt.string()); });
    }
    SCOPED_TRACE(stem);
    EXPECT_NE(message.find("refusing to load"), std::string::npos) << message;
    EXPECT_NE(message.find("'" + global + "'"), std::string::npos) << message;
    EXPECT_FALSE(std::filesystem::exists(dir / ("PWNED_" + stem.substr(5)))) << "payload ran";
    ++cases;
  }
  EXPECT_GE(cases, 11);
  for (auto& entry : std::filesystem::directory_iterator(dir))
    EXPECT_NE(entry.path().filename().string().rfind("PWNED_", 0), 0u) << entry.path();
}

TEST(Pickle, OpaqueRecordsKeepUnknownObjectsAsData) {
  // class Net: __reduce__ -> (mymod.Net, (3,), {'w': 1.5})  (protocol 2, by hand)
  std::string p = hex("8002636d796d6f640a4e65740a71004b038571015271027d71035801000000777104473ff800000000000073622e");
  EXPECT_NE(refusal([&] { load(p); }).find("'mymod.Net'"), std::string::npos);
  UnpickleOptions options;
  options.opaque_records = true;
  auto v = unpickle(p, "net.pkl", options).value;
  ASSERT_TRUE(v->is(K::Record));
  EXPECT_EQ(v->text, "mymod.Net");
  EXPECT_EQ(v->items.at(0)->integer, 3);
  EXPECT_EQ(v->state->get("w")->number, 1.5);
}

TEST(Pickle, OpaqueRecordsStillRefuseDangerousModules) {
  UnpickleOptions options;
  options.opaque_records = true;
  auto dir = test::refs_dir("checkpoints");
  for (auto name : {"evil_reduce_os_system", "evil_eval_stack_global", "evil_exec_global", "evil_subprocess",
                    "evil_global_os_system", "evil_inst", "evil_obj"}) {
    auto message = refusal([&] { unpickle(read_file((dir / (std::string(name) + ".pkl")).string()), name, options); });
    EXPECT_NE(message.find("refusing to load"), std::string::npos) << name << ": " << message;
  }
}

TEST(Pickle, AllowedGlobalsThatAreNotFunctionsCannotBeCalled) {
  // torch.FloatStorage('x') is a name the allow-list knows, but calling it is refused.
  std::string p = std::string("\x80\x02" "ctorch\nFloatStorage\n" "X\x01\x00\x00\x00" "x\x85R.", 31);
  EXPECT_NE(refusal([&] { load(p); }).find("'torch.FloatStorage'"), std::string::npos);
}

TEST(Pickle, RepeatedDictKeysKeepTheLastValueAndStayFast) {
  // {'a': 1, 'a': 2} as SETITEMS, then 200k distinct keys: must not be quadratic.
  std::string p("\x80\x02}(", 4);
  auto unicode = [](const std::string& s) {
    std::string out = "X";
    for (int i = 0; i < 4; ++i) out += static_cast<char>((s.size() >> (8 * i)) & 0xff);
    return out + s;
  };
  p += unicode("a") + "K" + std::string(1, '\x01') + unicode("a") + "K" + std::string(1, '\x02');
  for (int i = 0; i < 200000; ++i) p += unicode(fmt::format("k{}", i)) + "N";
  p += "u.";
  auto start = std::chrono::steady_clock::now();
  auto v = load(p);
  EXPECT_EQ(v->get("a")->integer, 2);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}
